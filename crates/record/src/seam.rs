//! The recorder seen through the core's seam: engines drive a [`SessionRecorder`] as a
//! `postern_core::SessionRecording` without depending on this crate.

use crate::cap::ResultCap;
use crate::event::{EventBody, SessionEnd};
use crate::recorder::SessionRecorder;
use postern_core::{RecordingError, SessionRecording};

impl SessionRecording for SessionRecorder {
    fn append(&mut self, event: EventBody) -> Result<(), RecordingError> {
        SessionRecorder::append(self, event).map_err(|e| RecordingError(e.to_string()))
    }

    fn commit(&mut self) -> Result<(), RecordingError> {
        self.flush().map_err(|e| RecordingError(e.to_string()))
    }

    fn wants_results(&self) -> bool {
        self.config().results != ResultCap::None
    }

    fn seal(self: Box<Self>, end: SessionEnd) -> Result<(), RecordingError> {
        SessionRecorder::seal(*self, end)
            .map(|_| ())
            .map_err(|e| RecordingError(e.to_string()))
    }
}

-- A statement approved without being held (an MCP tool, or any caller that asked not to wait)
-- is re-submitted by its requester under the approval's id, and runs exactly once: the moment it
-- is used is stamped here, atomically, and a second re-submission is refused.
ALTER TABLE approvals ADD COLUMN used_at_ms INTEGER;

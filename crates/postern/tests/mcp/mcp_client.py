"""Drives Postern's MCP endpoint with the official MCP Python SDK over streamable HTTP.

Run by crates/postern/tests/e2e/mcp.rs against a live gateway. Environment:
  POSTERN_MCP_URL       the endpoint, e.g. http://127.0.0.1:18080/mcp
  POSTERN_AGENT_TOKEN   a gateway token of the agent (kind agent, group agents)
  POSTERN_BIN           the postern binary, POSTERN_CONFIG its config
  POSTERN_DBA_TOKEN     a token of a dba, who approves from the CLI
  POSTERN_MASKED        "table.column" of a masked column, POSTERN_MASKED_VALUE its raw value

Each check prints "ok NAME" or "FAIL NAME: why"; the last line is "N passed, N failed" and a
JSON line "RESULT {...}" hands the causal ids and approval id to the Rust side.
"""

import asyncio
import json
import os
import subprocess
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

URL = os.environ["POSTERN_MCP_URL"]
TARGET = os.environ.get("POSTERN_TARGET", "shop")

passed = 0
failed = 0
result = {}


def check(name, ok, why=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}: {why}", flush=True)


def structured(res):
    """The structured content of a tool result (falling back to its text as JSON)."""
    if res.structured_content is not None:
        return res.structured_content
    for block in res.content:
        text = getattr(block, "text", None)
        if text:
            try:
                return json.loads(text)
            except ValueError:
                return {"text": text}
    return {}


def approve(approval_id):
    """`postern approvals approve ID` as the dba, the way a human would."""
    env = dict(os.environ, POSTERN_TOKEN=os.environ["POSTERN_DBA_TOKEN"])
    out = subprocess.run(
        [os.environ["POSTERN_BIN"], "approvals", "approve", approval_id,
         "--config", os.environ["POSTERN_CONFIG"]],
        env=env, capture_output=True, text=True, timeout=60,
    )
    return out.returncode, out.stdout + out.stderr


async def main():
    headers = {"Authorization": f"Bearer {os.environ['POSTERN_AGENT_TOKEN']}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as http:
        async with streamable_http_client(URL, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session_checks(session)


async def session_checks(session):
    init = await session.initialize()
    check("initialize", init.server_info.name == "postern", repr(init.server_info))
    check("initialize advertises tools", init.capabilities.tools is not None,
          repr(init.capabilities))

    tools = await session.list_tools()
    names = sorted(t.name for t in tools.tools)
    check("list tools", names == ["describe_target", "get_approval", "list_targets", "query"],
          repr(names))
    query_tool = next(t for t in tools.tools if t.name == "query")
    check("the target argument names the caller's targets",
          query_tool.input_schema["properties"]["target"].get("enum") == [TARGET],
          repr(query_tool.input_schema))

    res = await session.call_tool("list_targets", {})
    targets = structured(res)
    check("list_targets", not res.is_error and [t["name"] for t in targets["targets"]] == [TARGET],
          repr(targets))
    check("list_targets says who I am", targets["you"]["kind"] == "agent", repr(targets))

    # describe a target
    res = await session.call_tool("describe_target", {"target": TARGET, "schema": "public",
                                                      "intent": "learn the schema"})
    described = structured(res)
    tables = {t["name"]: t for t in described.get("tables", [])}
    check("describe_target lists tables", not res.is_error and "orders" in tables,
          repr(described)[:2000])
    if "orders" in tables:
        columns = [c["name"] for c in tables["orders"]["columns"]]
        check("describe_target lists columns in order", columns[0] == "id", repr(columns))
    masked_table, masked_column = os.environ["POSTERN_MASKED"].split(".")
    if masked_table in tables:
        column = next((c for c in tables[masked_table]["columns"] if c["name"] == masked_column), {})
        result["describe_marks_masked"] = column.get("masked") is True

    # a query with an intent and a prompt in _meta
    res = await session.call_tool(
        "query",
        {"target": TARGET, "sql": "SELECT id, status FROM orders ORDER BY id LIMIT 3",
         "intent": "count open orders for the weekly report"},
        meta={"prompt": "How many open orders do we have?",
              "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    rows = structured(res)
    check("query runs", not res.is_error and rows["results"][0]["columns"] == ["id", "status"],
          repr(rows))
    check("query returns rows as text",
          rows.get("results", [{}])[0].get("rows", [[None]])[0][0] == "1000", repr(rows))
    check("query has a causal id", len(rows.get("causal_id", "")) == 36, repr(rows))
    result["query_causal_id"] = rows.get("causal_id")

    # the row cap
    res = await session.call_tool("query", {"target": TARGET,
                                            "sql": "SELECT g FROM generate_series(1, 50) g"})
    capped = structured(res)
    check("the row cap cuts with a note",
          not res.is_error and capped["truncated"] is True
          and len(capped["results"][0]["rows"]) == int(os.environ.get("POSTERN_MAX_ROWS", "20"))
          and "row cap" in capped.get("note", ""),
          repr(capped)[:500])

    # a blocked statement
    res = await session.call_tool("query", {"target": TARGET, "sql": "DROP TABLE orders",
                                            "intent": "clean up"})
    blocked = structured(res)
    check("a blocked statement is a tool error", res.is_error is True, repr(res))
    check("the error names the rule",
          blocked.get("error") == "blocked" and blocked.get("rule") == "agents-no-ddl"
          and "agents-no-ddl" in blocked.get("message", ""), repr(blocked))
    check("the error says what to do", "change the statement" in blocked.get("next_step", ""),
          repr(blocked))
    result["blocked_causal_id"] = blocked.get("causal_id")

    # a masked column: the raw value never reaches the agent
    res = await session.call_tool("query", {
        "target": TARGET,
        "sql": f"SELECT {masked_column} FROM {masked_table} ORDER BY 1 LIMIT 50",
        "intent": "look at contact data"})
    text = json.dumps(structured(res)) + "".join(getattr(b, "text", "") for b in res.content)
    check("a masked column's raw value is absent", os.environ["POSTERN_MASKED_VALUE"] not in text,
          text[:500])
    result["masked_is_error"] = bool(res.is_error)
    result["masked_answer"] = structured(res)

    # an approval: pending -> approved in the CLI -> re-submitted -> runs once
    update = "UPDATE orders SET status = 'cancelled' WHERE id = 1001"
    res = await session.call_tool("query", {"target": TARGET, "sql": update,
                                            "intent": "cancel order 1001 as the customer asked"})
    pending = structured(res)
    approval_id = pending.get("approval_id", "")
    check("a write needing approval is pending with an id",
          res.is_error is True and pending.get("error") == "approval_pending"
          and approval_id.startswith("APR-"), repr(pending))
    check("the pending error says who approves and how to re-submit",
          "dba" in pending.get("next_step", "") and "approval_id" in pending.get("next_step", ""),
          repr(pending))
    result["approval_id"] = approval_id

    res = await session.call_tool("get_approval", {"id": approval_id})
    check("get_approval: pending", structured(res).get("state") == "pending", repr(structured(res)))

    res = await session.call_tool("query", {"target": TARGET, "sql": update,
                                            "approval_id": approval_id})
    check("re-submitting before the decision is still pending",
          structured(res).get("error") == "approval_pending", repr(structured(res)))

    code, output = approve(approval_id)
    check("postern approvals approve", code == 0, output)

    res = await session.call_tool("get_approval", {"id": approval_id})
    state = structured(res)
    check("get_approval: approved by the dba",
          state.get("state") == "approved" and state.get("decided_by") == "dana"
          and state.get("used_at") is None, repr(state))

    res = await session.call_tool("query", {"target": TARGET, "sql": update,
                                            "approval_id": approval_id,
                                            "intent": "cancel order 1001, approved"})
    ran = structured(res)
    check("the re-submitted statement runs", not res.is_error
          and ran.get("results") == [{"rows_affected": 1}], repr(ran))
    result["resubmitted_causal_id"] = ran.get("causal_id")

    res = await session.call_tool("query", {"target": TARGET, "sql": update,
                                            "approval_id": approval_id})
    again = structured(res)
    check("a second re-submission does not run",
          res.is_error is True and again.get("error") == "approval_refused"
          and "already used" in again.get("message", ""), repr(again))

    res = await session.call_tool("get_approval", {"id": approval_id})
    check("get_approval: used", structured(res).get("used_at") is not None, repr(structured(res)))

    res = await session.call_tool("query", {"target": "nope", "sql": "SELECT 1"})
    check("an unknown target is a tool error",
          res.is_error is True and structured(res).get("error") == "unknown_target",
          repr(structured(res)))


async def unauthenticated():
    """401 with a Bearer challenge for no token, a forged one and a malformed header."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "probe", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0)) as http:
        for name, extra in [
            ("no token", {}),
            ("forged token", {"Authorization": f"Bearer {os.environ['POSTERN_FORGED_TOKEN']}"}),
            ("not bearer", {"Authorization": "Basic YWxpY2U6c2VjcmV0"}),
        ]:
            response = await http.post(URL, json=body, headers={**headers, **extra})
            challenge = response.headers.get("www-authenticate", "")
            check(f"{name}: 401 with a Bearer challenge",
                  response.status_code == 401 and challenge.startswith("Bearer "),
                  f"{response.status_code} {challenge!r} {response.text[:200]}")
    # The SDK's own client gets nowhere either.
    refused = None
    try:
        bad = {"Authorization": f"Bearer {os.environ['POSTERN_FORGED_TOKEN']}"}
        async with httpx2.AsyncClient(headers=bad, timeout=httpx2.Timeout(30.0)) as forged:
            async with streamable_http_client(URL, http_client=forged) as (read, write):
                async with ClientSession(read, write) as session:
                    await asyncio.wait_for(session.initialize(), 30)
    except Exception as e:  # noqa: BLE001 - anyio may wrap it in an exception group
        refused = e
    check("the SDK client cannot initialize with a forged token", refused is not None,
          "initialize succeeded")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "all"
    if mode in ("unauthenticated", "all"):
        asyncio.run(unauthenticated())
    if mode in ("session", "all"):
        asyncio.run(main())
        print("RESULT " + json.dumps(result), flush=True)
    print(f"mcp_client: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)

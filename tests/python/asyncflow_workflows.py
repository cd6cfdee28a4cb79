"""Real AsyncFlow workflows with RHAPSODY telemetry, forwarded to Vigil.

Run by tests/tests/asyncflow.rs with the test virtualenv's interpreter:

    python asyncflow_workflows.py README VIGIL_BIN LIVE_URL REPLAY_URL WORKDIR

1. Runs AsyncFlow workflows (several workflow scopes, a block, dependencies,
   a task that raises, a cancelled task, a custom `define_event` type with
   non-finite floats) with telemetry on, forwarding live to LIVE_URL with the
   forwarder in the README (the code block is executed as written) and
   writing RHAPSODY's checkpoint file into WORKDIR/telemetry.
2. Checks that LIVE_URL gives back every event field for field, type for
   type, and that the workflow filter finds each workflow's events.
3. Replays the checkpoint directory into REPLAY_URL with `vigil import` and
   checks the same; replays it into LIVE_URL again: all duplicates.

Prints a JSON summary on the last line; exits non-zero naming the first
difference.
"""

import asyncio
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from radical.asyncflow import LocalExecutionBackend, WorkflowEngine
from rhapsody.telemetry import define_event
from rhapsody.telemetry.events import make_event

README, VIGIL, LIVE, REPLAY, WORKDIR = sys.argv[1:6]
CHECKPOINT_DIR = os.path.join(WORKDIR, "telemetry")
# What RHAPSODY's checkpoint writer adds to each event line.
CHECKPOINT_KEYS = {"trace_id", "span_id", "name", "section"}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def readme_forwarder():
    """The README's forwarder, executed exactly as the README shows it."""
    text = open(README, encoding="utf-8").read()
    m = re.search(
        r"<!-- tested by tests/tests/asyncflow.rs[^>]*-->\s*```python\n(.*?)```", text, re.S
    )
    if not m:
        fail("README has no tested forwarder block")
    scope = {}
    exec(compile(m.group(1), "README.md forwarder", "exec"), scope)
    return scope["forward_to_vigil"]


def as_dict(event):
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


async def run_workflows(forward_to_vigil):
    captured = []
    backend = await LocalExecutionBackend(ThreadPoolExecutor(4))
    flow = await WorkflowEngine.create(backend=backend)
    telemetry = await flow.start_telemetry(
        checkpoint_path=CHECKPOINT_DIR, checkpoint_interval=0.5
    )
    telemetry.subscribe(lambda e: captured.append(as_dict(e)))
    close = forward_to_vigil(telemetry, url=LIVE, every=0.2)

    @flow.function_task
    async def load(n):
        return list(range(n))

    @flow.function_task
    async def total(xs):
        return sum(xs)

    @flow.function_task
    async def scale(x, by):
        return x * by

    @flow.function_task
    async def explode():
        raise RuntimeError("bad input")

    @flow.function_task
    async def linger():
        await asyncio.sleep(3)  # cancelled long before; shutdown waits for the thread

    @flow.block
    async def pipeline(n):
        return await scale(total(load(n)), 2)

    workflows = []
    async with flow.workflow_scope("wf-sum") as wid:
        workflows.append(wid)
        assert await total(load(10)) == 45
    async with flow.workflow_scope() as wid:  # a generated id
        workflows.append(wid)
        assert await pipeline(4) == 12
    async with flow.workflow_scope("wf-errors") as wid:
        workflows.append(wid)
        try:
            await explode()
            fail("a raising task did not raise")
        except RuntimeError:
            pass
        lingering = linger()
        await asyncio.sleep(0.3)
        lingering.cancel()
        try:
            await lingering
        except asyncio.CancelledError:
            pass

    # Custom types as define_event() accepts them: floats that JSON cannot
    # hold strictly, a field named `seq`, names with a colon and a space.
    Loss = define_event("vigil.test.Loss", loss=(float, float("inf")), seq=int)
    Odd = define_event("ns:colon.a b", note=str, ratio=float)
    telemetry.emit(make_event(Loss, session_id=telemetry.session_id, backend="application", seq=7))
    telemetry.emit(
        make_event(
            Loss,
            session_id=telemetry.session_id,
            backend="application",
            loss=float("nan"),
            seq=8,
            attributes={"asyncflow.workflow_id": "wf-sum", "neg": float("-inf")},
        )
    )
    telemetry.emit(
        make_event(Odd, session_id=telemetry.session_id, backend="application", note="x", ratio=0.1 + 0.2)
    )
    await asyncio.sleep(0.3)
    await telemetry.stop()  # emits SessionEnded and closes the checkpoint file
    await close()
    await flow.shutdown()
    return captured, workflows, telemetry.session_id


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())  # Python's json reads NaN and Infinity


def events_of(base, **params):
    out, cursor = [], None
    while True:
        q = dict(params, limit="500")
        if cursor:
            q["cursor"] = cursor
        page = get_json(f"{base}/api/v2/events?{urllib.parse.urlencode(q)}")
        out.extend(page["events"])
        cursor = page["next_cursor"]
        if not cursor:
            return out


def same(a, b, path):
    """Equal in value and in Python type, recursively (NaN equals NaN)."""
    if type(a) is not type(b):
        return f"{path}: sent {a!r} ({type(a).__name__}), got {b!r} ({type(b).__name__})"
    if isinstance(a, float):
        if (math.isnan(a) and math.isnan(b)) or a == b:
            return None
        return f"{path}: sent {a!r}, got {b!r}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path}: sent keys {list(a)}, got {list(b)}"
        for k in a:
            d = same(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: sent {len(a)} items, got {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = same(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: sent {a!r}, got {b!r}"


def check_round_trip(base, captured, session_id, extra_keys=frozenset()):
    stored = events_of(base, session_id=session_id)
    by_id = {e["event_id"]: e["event"] for e in stored}
    if len(by_id) != len(stored):
        fail(f"{base}: an event is stored twice")
    if set(by_id) != {e["event_id"] for e in captured}:
        missing = {e["event_id"] for e in captured} - set(by_id)
        fail(f"{base}: {len(stored)} events stored, {len(captured)} sent; missing {sorted(missing)[:5]}")
    for sent in captured:
        got = dict(by_id[sent["event_id"]])
        extra = set(got) - set(sent)
        if extra - extra_keys:
            fail(f"{base}: event {sent['event_id']} came back with fields {sorted(extra)}")
        for k in extra:
            del got[k]
        # The checkpoint writer may order its own keys after the event's.
        got = {k: got[k] for k in sent if k in got}
        d = same(sent, got, sent["event_type"])
        if d:
            fail(f"{base}: {d}")
    return stored


def workflow_ids(captured):
    return sorted({
        e["attributes"]["asyncflow.workflow_id"]
        for e in captured
        if isinstance(e["attributes"], dict) and "asyncflow.workflow_id" in e["attributes"]
    })


def check_workflow_filter(base, captured, workflows, session_id):
    found = workflow_ids(captured)
    if not set(workflows) <= set(found) or not any(w.startswith("block.") for w in found):
        fail(f"workflow ids {found}: the scopes {workflows} and a block's were expected")
    for wid in found:
        want = {
            e["event_id"]
            for e in captured
            if isinstance(e["attributes"], dict) and e["attributes"].get("asyncflow.workflow_id") == wid
        }
        if not want:
            fail(f"no event of workflow {wid} was captured")
        got = {e["event_id"] for e in events_of(base, workflow_id=wid, session_id=session_id)}
        if got != want:
            fail(f"{base}: workflow_id={wid} finds {len(got)} events, {len(want)} were sent")


def vigil_import(url):
    out = subprocess.run(
        [VIGIL, "import", "--url", url, "--batch", "7", CHECKPOINT_DIR],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        fail(f"vigil import into {url} failed: {out.stdout}{out.stderr}")
    line = out.stdout.strip().splitlines()[-1]
    m = re.search(r"(\d+) lines: (\d+) stored, (\d+) already there(?:, skipped (.*))?$", line)
    if not m:
        fail(f"vigil import printed {out.stdout!r}")
    skipped = {}
    for part in (m.group(4) or "").split(", "):
        if part:
            n, section = part.split(" ", 1)
            skipped[section] = int(n)
    return {"lines": int(m.group(1)), "stored": int(m.group(2)), "duplicates": int(m.group(3)), "skipped": skipped}


def main():
    captured, workflows, session_id = asyncio.run(run_workflows(readme_forwarder()))
    types = {e["event_type"] for e in captured}
    for t in [
        "SessionStarted", "TaskCreated", "asyncflow.TaskResolved", "TaskSubmitted",
        "TaskCompleted", "TaskFailed", "TaskCanceled", "vigil.test.Loss", "ns:colon.a b",
        "SessionEnded",
    ]:
        if t not in types:
            fail(f"the workflows emitted no {t} (types: {sorted(types)})")

    check_round_trip(LIVE, captured, session_id)
    check_workflow_filter(LIVE, captured, workflows, session_id)

    files = os.listdir(CHECKPOINT_DIR)
    if len(files) != 1 or not files[0].endswith(".telemetry.jsonl"):
        fail(f"checkpoint directory holds {files}")
    replay = vigil_import(REPLAY)
    if replay["stored"] != len(captured) or replay["duplicates"] != 0:
        fail(f"import into an empty server: {replay}, {len(captured)} events sent")
    if not replay["skipped"].get("metric") or not replay["skipped"].get("span"):
        fail(f"the checkpoint's metric and span lines were not counted: {replay}")
    check_round_trip(REPLAY, captured, session_id, CHECKPOINT_KEYS)
    check_workflow_filter(REPLAY, captured, workflows, session_id)

    again = vigil_import(LIVE)
    if again["stored"] != 0 or again["duplicates"] != len(captured):
        fail(f"replaying what was forwarded live stored something: {again}")

    print(json.dumps({
        "events": len(captured),
        "types": sorted(types),
        "workflows": workflow_ids(captured),
        "replay": replay,
        "again": again,
    }))


main()

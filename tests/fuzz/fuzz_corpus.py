"""A generated corpus of malformed and edge-case inputs for the real ``commsim`` command line.

Each :class:`Case` is a command line plus the files it reads, written into a
fresh directory. ``must_reject`` marks inputs that have no correct answer: the
command must end with a clean error (nonzero exit code, no traceback). Every
other case may succeed or fail cleanly; none may raise a traceback, hang or blow
the memory cap. The corpus is deterministic (seeded mutations plus hand-written
classes), so a failure names a reproducible case id.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

__all__ = ["Case", "corpus"]

REPO = Path(__file__).resolve().parents[2]
HAND_TRACE = json.loads((REPO / "workloads" / "examples" / "hand_written.json").read_text(encoding="utf-8"))
NCCL_LOG = (REPO.parent / "shared" / "data" / "nccl-tests-azure-ndv4-a100" / "all_reduce_2gpu.log")


@dataclass
class Case:
    """One input: ``argv`` for ``commsim``, ``files`` (name -> text) written next to it, and the verdict wanted."""

    id: str
    family: str
    argv: list[str]
    files: dict[str, str] = field(default_factory=dict)
    must_reject: bool = False


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False)


QUIET_OUT = {"dir": "out", "dashboard": False, "perfetto": False, "tables": "csv"}

BASE_COLLECTIVE = {
    "name": "fz",
    "topology": "switch:4,50GB/s,500ns",
    "workload": {"kind": "collective", "op": "all_reduce", "sizes": "1MiB:4MiB"},
    "outputs": QUIET_OUT,
}
BASE_TRAFFIC = {
    "name": "fz",
    "topology": "switch:4,50GB/s,500ns",
    "workload": {"kind": "traffic", "flows": 20, "size": "1 MB"},
    "outputs": QUIET_OUT,
}
BASE_TRACE = {
    "name": "fz",
    "topology": "switch:2,50GB/s,500ns",
    "workload": {"kind": "trace", "file": "trace.json"},
    "outputs": QUIET_OUT,
}

# values no numeric field may take
NON_FINITE = [".inf", "-.inf", ".nan", 1e400, "1e400 GB/s", "inf us"]
GARBAGE = ["abc", [], {}, None, "[bold]x[/]", "10 furlongs", True]


def _set(data: dict, dotted: str, value: object) -> dict:
    out = copy.deepcopy(data)
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _run(case_id: str, scenario: dict | str, *, must_reject: bool, extra: list[str] | None = None,
         files: dict[str, str] | None = None, family: str = "scenario") -> Case:
    text = scenario if isinstance(scenario, str) else _dump(scenario)
    return Case(case_id, family, ["run", "s.yaml", *(extra or [])], {"s.yaml": text, **(files or {})}, must_reject)


def _scenario_cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    numeric_fields = {
        "seed": BASE_COLLECTIVE, "collective.step_latency": BASE_COLLECTIVE,
        "collective.bandwidth_efficiency": BASE_COLLECTIVE, "collective.channels": BASE_COLLECTIVE,
        "workload.flows": BASE_TRAFFIC, "workload.size": BASE_TRAFFIC, "workload.load": BASE_TRAFFIC,
        "workload.size_sigma": BASE_TRAFFIC, "outputs.timeline_ranks": BASE_COLLECTIVE,
        "fault_horizon": BASE_COLLECTIVE,
    }
    bad = [-1, "-5 us", *NON_FINITE, *GARBAGE]
    for path, base in numeric_fields.items():
        for value in rng.sample(bad, 7):
            # None resets a field to its default for some paths, so it need not be rejected
            reject = value is not None
            cases.append(_run(f"scenario:{path}={value!r}", _set(base, path, value), must_reject=reject))
    # whole-document oddities
    for i, text in enumerate(["", "[1, 2]", "name: [unclosed", "\t: bad", "42", "name: x\nworkload: 3\n",
                              "name: ''\nworkload: {kind: collective}\ntopology: 'switch:2'\n",
                              "name: x\nworkload: {kind: bogus}\n", "name: x\nworkload: {kind: collective}\n",
                              "name: x\nunknown_field: 1\nworkload: {kind: collective}\ntopology: 'switch:2'\n",
                              "\x00\x01\x02", "name: x\nname: y\n" + _dump({"workload": {"kind": "collective"}})]):
        cases.append(_run(f"scenario:doc{i}", text, must_reject=True))
    # topology references and devices
    # one device is a legal (if dull) collective: either answer is fine for switch:1
    for value in ["switch:0", "switch:-1", "switch:1", "switch:10**12", "switch:1000000000000",
                  "fat_tree:k=1000", "fat_tree:k=3", "fat_tree:k=-2", "ring:n=2,bandwidth=.inf",
                  "switch:4,inf GB/s", "switch:4,50GB/s,inf ns", "switch:4,50GB/s,.nan us", "nope.yaml",
                  "bogus_generator:3", "switch:4,0GB/s", "[bold]switch[/]:4", "torus:dims=0"]:
        reject = value not in ("fat_tree:k=3", "switch:1")
        cases.append(_run(f"scenario:topology={value}", _set(BASE_COLLECTIVE, "topology", value), must_reject=reject))
    cases.append(_run("scenario:devices unknown node", _set(BASE_COLLECTIVE, "devices", {"gpu99": "h100_sxm"}),
                      must_reject=True))
    cases.append(_run("scenario:devices unknown preset", _set(BASE_COLLECTIVE, "devices", {"*": "nope"}),
                      must_reject=True))
    # outputs
    for name, value in [("timeline_devices", ["gpu99"]), ("timeline_devices", ["[red]x"]), ("dir", "/dev/null/x"),
                        ("dir", "s.yaml"), ("tables", "xml"), ("record", "sometimes"), ("timeline_ranks", 0)]:
        base = BASE_TRAFFIC
        cases.append(_run(f"scenario:outputs.{name}={value!r}", _set(base, f"outputs.{name}", value),
                          must_reject=True))
    # faults
    links = [["gpu0", "sw"], ["gpu0", "gpu1"], ["nope", "sw"], ["gpu0"], "gpu0-sw"]
    for i, link in enumerate(links):
        fault = {"kind": "link_down", "at": "1 us", "link": link}
        for base in (BASE_COLLECTIVE, BASE_TRAFFIC):
            reject = link != ["gpu0", "sw"]
            cases.append(_run(f"faults:link{i}:{base['workload']['kind']}", _set(base, "faults", [fault]),
                              must_reject=reject))
    fault_values = [("at", -1), ("at", ".inf"), ("at", ".nan"), ("duration", 0), ("duration", -1),
                    ("duration", ".inf"), ("factor", 0), ("factor", 2), ("factor", ".nan"), ("kind", "meteor"),
                    ("device", "gpu99"), ("slowdown", 0.5), ("slowdown", ".inf")]
    for key, value in fault_values:
        kind = "link_degraded" if key == "factor" else "straggler" if key in ("slowdown", "device") else "link_down"
        fault = {"kind": kind, "at": "1 us"}
        fault.update({"link": ["gpu0", "sw"]} if kind != "straggler" else {"device": "gpu0", "slowdown": 2})
        if kind == "link_degraded":
            fault["factor"] = 0.5
        fault[key] = value
        cases.append(_run(f"faults:{kind}.{key}={value!r}", _set(BASE_TRAFFIC, "faults", [fault]), must_reject=True))
    cases.append(_run("faults:rates without horizon", _set(BASE_COLLECTIVE, "fault_rates", {"link_down": "1 /s"}),
                      must_reject=True))
    cases.append(_run("faults:horizon without rates", _set(BASE_TRAFFIC, "fault_horizon", "1 s"), must_reject=True))
    study = {"name": "fz", "workload": {"kind": "study", "study": "t3", "params": {}}, "outputs": QUIET_OUT,
             "faults": [{"kind": "link_down", "at": 0, "link": ["gpu0", "sw"]}], "topology": "switch:4"}
    cases.append(_run("faults:on a study", study, must_reject=True))
    cases.append(_run("study:params.tokens=true", _set(_set(study, "faults", []), "workload.params.tokens", True),
                      must_reject=True))
    cases.append(_run("faults:rate inf", _set(_set(BASE_TRAFFIC, "fault_rates", {"link_down": "inf /s"}),
                                               "fault_horizon", "1 s"), must_reject=True))
    cases.append(_run("faults:after the workload", _set(BASE_TRAFFIC, "faults",
                                                         [{"kind": "link_down", "at": 1e30, "link": ["gpu0", "sw"]}]),
                      must_reject=False))
    # workload oddities
    for key, value in [("sizes", "0.5"), ("sizes", "0"), ("sizes", "1e400"), ("sizes", "4MiB:1MiB"),
                       ("sizes", "1B:1TiB:x1.0000001"), ("sizes", [-1]), ("sizes", [".inf"]), ("sizes", [0.5]), ("ranks", 0),
                       ("ranks", [0, 0]), ("ranks", [99]), ("ranks", -3), ("op", "scatter"), ("algorithm", "nope"),
                       ("algorithm", "[bold]ring[/]"), ("params", {"bogus": 1})]:
        cases.append(_run(f"workload.{key}={value!r}", _set(BASE_COLLECTIVE, f"workload.{key}", value),
                          must_reject=True))
    training = {"name": "fz", "topology": "switch:8,50GB/s,500ns", "outputs": QUIET_OUT,
                "workload": {"kind": "training", "model": "open-llama-3b", "dp": 8}}
    for key, value in [("dp", 10**30), ("dp", 0), ("tp", -1), ("model", "nope"), ("model", "[/]"),
                       ("micro_batches", 0), ("seq_len", -5), ("dp", ".inf"), ("dp", True), ("pp", False),
                       ("micro_batch_size", True)]:
        cases.append(_run(f"training.{key}={value!r}", _set(training, f"workload.{key}", value), must_reject=True))
    return cases


def _set_cases() -> list[Case]:
    text = _dump({**BASE_TRAFFIC, "faults": [{"kind": "link_down", "at": "1 ms", "link": ["gpu0", "sw"],
                                              "duration": "1 ms"}]})
    rows = [
        (["--set", "faults.x.at=1"], True), (["--set", "faults.5.at=1"], True), (["--set", "faults.-1.at=1"], True),
        (["--set", "faults.0.at.deep=1"], True), (["--set", "seed"], True), (["--set", "=3"], True),
        (["--set", "seed=1", "--set", "seed=2"], True), (["--set", "workload.flows=10,20"], True),
        (["--set", "seed=-4"], True), (["--set", "workload.size=.inf"], True),
        (["--set", "name=[bold]x[/]"], False), (["--set", "workload.kind=study"], True),
        (["--set", "faults.0=3"], True), (["--set", "faults.1={kind: link_down, at: 0}"], True),
        (["--format", "xml"], True), (["-o", "/dev/null/x"], True), (["-o", "s.yaml"], True),
        (["--set", "outputs.dir=/dev/null/x"], True), (["--set", "seed=1", "--set", "seed=1"], True),
        (["--set", "workload.load=2"], True),
    ]
    return [Case(f"set:{' '.join(extra)}", "flags", ["run", "s.yaml", *extra], {"s.yaml": text}, reject)
            for extra, reject in rows]


def _topology_file_cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    base = {"name": "t", "nodes": [{"name": "a", "kind": "device", "device": "h100_sxm"},
                                   {"name": "b", "kind": "device", "device": "h100_sxm"}],
            "links": [{"a": "a", "b": "b", "bandwidth": "50 GB/s", "latency": "1 us"}]}
    mutations = [("links.0.bandwidth", v) for v in ["-5 GB/s", "0 GB/s", ".inf", "inf GB/s", "1e400 GB/s", "5 GBs",
                                                    "abc", None, "[b]5 GB/s[/b]"]]
    mutations += [("links.0.latency", v) for v in ["-1 us", ".inf", ".nan", "inf s", "1e400 s", "5 parsecs"]]
    mutations += [("links.0.b", v) for v in ["zz", "a", None, 7]]
    mutations += [("nodes.0.device", v) for v in ["nope", None, {"base": "h100_sxm", "peak_flops": {"bf16": "-1"}},
                                                  {"base": "h100_sxm", "memory": ".inf"}]]
    mutations += [("nodes.1.name", "a"), ("nodes.0.kind", "toaster"), ("links", []), ("nodes", []),
                  ("links.0.bandwidth", "1e-30 B/s")]
    for path, value in mutations:
        data = copy.deepcopy(base)
        node: object = data
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
        reject = path != "links.0.bandwidth" or value != "1e-30 B/s"
        topo = _dump(data)
        cases.append(Case(f"topology-file:{path}={value!r}", "topology", ["topology", "show", "t.yaml", "--html",
                                                                            "t.html"], {"t.yaml": topo}, reject))
        scenario = _set(BASE_TRAFFIC, "topology", "t.yaml")
        cases.append(_run(f"topology-in-scenario:{path}={value!r}", scenario, must_reject=reject,
                          files={"t.yaml": topo}, family="topology"))
    for text in ["", "nodes: 3", "{{{", "links: [{a: a}]"]:
        cases.append(Case(f"topology-file:doc {text!r}", "topology", ["topology", "show", "t.yaml"], {"t.yaml": text},
                          True))
    for arg in ["switch:0", "fat_tree:k=1000", "switch:10**12", "ring:n=1", "nope:3", "switch:4,-1GB/s",
                "switch:4,50GB/s,.inf us"]:
        cases.append(Case(f"topology-show:{arg}", "topology", ["topology", "show", arg, "--html", "t.html"], {},
                          True))
    cases.append(Case("topology-show:html into /dev/null", "topology",
                      ["topology", "show", "switch:4", "--html", "/dev/null/x.html"], {}, True))
    cases.append(Case("topology-show:html is a directory", "topology",
                      ["topology", "show", "switch:4", "--html", "."], {}, True))
    return cases


def _trace_cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    op_mutations = [("bytes", "Infinity"), ("bytes", "NaN"), ("bytes", -1), ("bytes", "1e400"), ("bytes", "abc"),
                    ("bytes", None), ("flops", "-4 TFLOP"), ("flops", "Infinity"), ("seconds", "-25 us"),
                    ("seconds", "Infinity"), ("deps", ["missing"]), ("deps", "gemm"), ("peer", "ring:+9"),
                    ("peer", 7), ("group", "nope"), ("group", [0, 5]), ("root", 9), ("kind", "teleport"),
                    ("op", "scatter"), ("dtype", "fp3"), ("id", "load")]
    ops = HAND_TRACE["programs"][0]["ops"]
    for key, value in op_mutations:
        for index in rng.sample(range(len(ops)), 2):
            data = copy.deepcopy(HAND_TRACE)
            unchanged = data["programs"][0]["ops"][index].get(key) == value
            data["programs"][0]["ops"][index][key] = value
            text = json.dumps(data).replace('"Infinity"', "Infinity").replace('"NaN"', "NaN")
            case_id = f"trace:ops[{index}].{key}={value!r}"
            cases.append(Case(case_id, "trace", ["trace", "validate", "trace.json"], {"trace.json": text},
                              not unchanged))
            cases.append(_run(case_id + " (run)", BASE_TRACE, must_reject=not unchanged, files={"trace.json": text},
                              family="trace"))
    # (a trace of 10**12 ranks or no programs is odd but has a meaning: either answer is fine)
    top = [("ranks", 0, True), ("ranks", -2, True), ("ranks", 10**12, False), ("format", "other", True),
           ("version", 99, True), ("programs", [], False), ("communicators", {"ring": [[0, 7]]}, True),
           ("programs", "x", True)]
    for key, value, reject in top:
        data = {**copy.deepcopy(HAND_TRACE), key: value}
        cases.append(Case(f"trace:{key}={value!r}", "trace", ["trace", "validate", "trace.json"],
                          {"trace.json": json.dumps(data)}, reject))
    for i, text in enumerate(["", "{", "[]", "null", '{"format": "commsim-trace"}', "\xff\xfe"]):
        cases.append(Case(f"trace:doc{i}", "trace", ["trace", "validate", "trace.json"], {"trace.json": text}, True))
    dep_cycle = copy.deepcopy(HAND_TRACE)
    dep_cycle["programs"][0]["ops"][0]["deps"] = ["free_w"]
    cases.append(Case("trace:dependency cycle", "trace", ["trace", "validate", "trace.json"],
                      {"trace.json": json.dumps(dep_cycle)}, True))
    cases.append(Case("trace:devices 0", "trace", ["trace", "validate", "trace.json", "--devices", "0"],
                      {"trace.json": json.dumps(HAND_TRACE)}, True))
    for flags in (["--tp", "0"], ["--dp", "-1"], ["--pp", "1000"], ["--seq-len", "0"], ["--bucket-size", "-1 MiB"],
                  ["--bucket-size", "inf MiB"], ["--dtype", "fp3"], ["--micro-batches", "0"], ["--dp", "1000000000"],
                  ["-o", "/dev/null/x.json"]):
        out = [] if "-o" in flags else ["-o", "t.json"]
        cases.append(Case(f"trace-generate:{' '.join(flags)}", "trace",
                          ["trace", "generate", "open-llama-3b", *out, *flags], {}, True))
    return cases


def _collective_cases() -> list[Case]:
    rows = [
        (["--servers", "0"], True), (["--servers", "-1"], True), (["--sizes", "0.5"], True), (["--sizes", "0"], True),
        (["--sizes", "1e400"], True), (["--sizes", "abc"], True), (["--sizes", "4MiB:1MiB"], True),
        (["--sizes", "-1"], True), (["--sizes", "1B:1PiB:x1.00001"], True), (["--ranks", "0"], True),
        (["--ranks", "-3"], True), (["--ranks", "99"], True), (["--op", "scatter"], True), (["--algo", "nope"], True),
        (["--protocol", "LL64"], True), (["--dtype", "fp3"], True), (["--csv", "/dev/null/x.csv"], True),
        (["--csv", "."], True), (["--calibration", "nope.yaml"], True), (["--compare", "nope.log"], True),
        (["--algo", "[bold]x[/]"], True), (["--sizes", "1MiB", "--estimate"], False),
        (["--sizes", "1MiB,,2MiB"], True), (["--sizes", ".inf"], True), (["--sizes", "nan"], True),
    ]
    cases = [Case(f"collective:{' '.join(flags)}", "flags", ["collective", "-t", "switch:4,50GB/s,500ns",
                                                             "--sizes", "1MiB", *flags], {}, reject)
             for flags, reject in rows]
    for topo in ["switch:0", "switch:10**12", "fat_tree:k=1000", "nope", "switch:4,.inf GB/s", "switch:4,50GB/s,inf us"]:
        cases.append(Case(f"collective:-t {topo}", "flags", ["collective", "-t", topo, "--sizes", "1MiB"], {}, True))
    return cases


def _sweep_cases() -> list[Case]:
    text = _dump(BASE_COLLECTIVE)
    rows = [
        (["--set", "seed=1,2", "--jobs", "0"], True), (["--set", "seed=1,2", "--jobs", "-1"], True),
        (["--set", "seed="], True), ([], True), (["--set", "collective.channels=1,0"], True),
        (["--set", "collective.channels=1,2,abc"], True), (["--set", "workload.sizes=1MiB,0.5"], True),
        (["--set", "seed=1,2", "--dask", "bogus"], True), (["--set", "seed=1,2", "--dask", "tcp://127.0.0.1:9"], True),
        (["--set", "seed=1,2", "-o", "/dev/null/x"], True), (["--set", "seed=1,2", "-o", "s.yaml"], True),
        (["--set", "seed=1", "--set", "seed=2"], True), (["--set", "nope.deep=1,2"], True),
        (["--set", "seed=1,-2"], True), (["--set", "topology=switch:4,switch:0"], True),
        (["--set", "seed=1,2"], False),
    ]
    return [Case(f"sweep:{' '.join(flags)}", "sweep", ["sweep", "s.yaml", *flags], {"s.yaml": text}, reject)
            for flags, reject in rows]


def _nccl_cases(rng: random.Random) -> list[Case]:
    log = NCCL_LOG.read_text(encoding="utf-8") if NCCL_LOG.exists() else ""
    lines = log.splitlines()
    data_rows = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    variants: list[tuple[str, str]] = [("empty", ""), ("garbage", "hello\nworld\n"), ("binary", "\x00\x01" * 50),
                                       ("header only", "\n".join(lines[: data_rows[0]]) if data_rows else "#")]
    for token, what in [("nan", "time nan"), ("-8.65", "negative time"), ("inf", "time inf"), ("0.00", "zero time")]:
        mutated = list(lines)
        for i in rng.sample(data_rows, min(3, len(data_rows))):
            parts = mutated[i].split()
            parts[4] = token
            mutated[i] = "  ".join(parts)
        variants.append((what, "\n".join(mutated)))
    truncated = list(lines)
    for i in data_rows[-3:]:
        truncated[i] = " ".join(truncated[i].split()[:3])
    variants.append(("truncated rows", "\n".join(truncated)))
    variants.append(("size 1e400", "\n".join(lines).replace("1073741824     268435456", "1e400     268435456")))
    variants.append(("markup", "\n".join(lines).replace("A100-SXM4-40GB", "[bold]A100[/]")))
    cases = []
    for what, text in variants:
        # a zero time or a truncated row might be skipped with a warning by a lenient parser: either answer is fine
        reject = what not in ("markup", "zero time", "truncated rows")
        cases.append(Case(f"nccl-calibrate:{what}", "nccl", ["calibrate", "nccl-tests", "log.log", "-t",
                                                             "switch:2,50GB/s,500ns", "-o", "c.yaml"],
                          {"log.log": text}, reject))
        cases.append(Case(f"nccl-compare:{what}", "nccl", ["collective", "-t", "switch:2,50GB/s,500ns", "--sizes",
                                                           "1MiB", "--compare", "log.log"], {"log.log": text},
                          reject))
    cases.append(Case("nccl-calibrate:-o into /dev/null", "nccl",
                      ["calibrate", "nccl-tests", "log.log", "-t", "switch:2", "-o", "/dev/null/c.yaml"],
                      {"log.log": log}, True))
    return cases


def _compress_cases() -> list[Case]:
    rows = [
        (["--shape", "10x"], True), (["--shape", "x10"], True), (["--shape", "0x5"], True), (["--shape", "-1"], True),
        (["--shape", "abc"], True), (["--shape", "1000000x1000000"], True), (["--shape", "10x10x"], True),
        (["--shape", "1e3"], True), (["--shape", "64", "-c", "bogus"], True), (["--shape", "64", "-c", "topk:ratio=2"], True),
        (["--shape", "64", "-c", "topk:ratio=-1"], True), (["--shape", "64", "-c", "topk:ratio=nan"], True),
        (["--shape", "64", "-c", "topk:nope=1"], True), (["--shape", "64", "-c", "topk:ratio"], True),
        (["--layers", "bogus"], True), (["--file", "nope.pt"], True), (["--file", "s.txt"], True),
        (["--shape", "64", "--seed", "-1"], True), (["--shape", "64", "--kind", "noise"], True),
        (["--model", "bogus"], True), (["--shape", "64", "--csv", "/dev/null/x.csv"], True),
        (["--shape", "64", "-c", "[bold]topk[/]"], True), (["--shape", "64", "-c", "topk:ratio=0.1"], False),
    ]
    return [Case(f"compress:{' '.join(flags)}", "compress", ["compress", *flags], {"s.txt": "not a tensor"}, reject)
            for flags, reject in rows]


def _misc_cases() -> list[Case]:
    rows = [(["validate", "--only", "kernel", "--csv", "/dev/null/v.csv"], True), (["validate", "--only", "kernel",
                                                                                   "--csv", "."], True),
            (["validate", "--only", "nope"], True), (["validate", "--only", "[bold]x"], True),
            (["run", "missing.yaml"], True), (["run", "."], True), (["trace", "validate", "missing.json"], True),
            (["nonsense"], True), (["run"], True), (["collective"], True), (["nonsense[/]"], True),
            (["run", "--bogus", "[/]"], True), (["run", "[/].yaml"], True), (["topology", "show", "[/]"], True),
            (["trace", "validate", "[bold]x[/].json"], True), (["collective", "-t", "switch:4", "--ranks", "[/]"], True),
            (["compress", "--shape", "[/]"], True), (["sweep", "[bold]s.yaml", "--set", "seed=1"], True)]
    return [Case(f"misc:{' '.join(argv)}", "flags", argv, {}, reject) for argv, reject in rows]


def _mutate(text: str, rng: random.Random, edits: int) -> str:
    """``text`` with ``edits`` random single-character deletions, insertions or replacements."""
    chars = list(text)
    alphabet = ":-[]{}#&*!|>'\"%@`,.0123456789 \n\tabcxyz\x00"
    for _ in range(edits):
        i = rng.randrange(len(chars) + 1)
        op = rng.randrange(3)
        if op == 0 and i < len(chars):
            del chars[i]
        elif op == 1:
            chars.insert(i, rng.choice(alphabet))
        elif i < len(chars):
            chars[i] = rng.choice(alphabet)
    return "".join(chars)


def _random_edit_cases(rng: random.Random) -> list[Case]:
    """Byte-level damage to valid files: any outcome is fine except a traceback, a hang or a blow-up."""
    cases = []
    for i in range(40):
        base = rng.choice([BASE_COLLECTIVE, BASE_TRAFFIC])
        text = _mutate(_dump(base), rng, rng.randint(1, 6))
        cases.append(_run(f"edit:scenario{i}", text, must_reject=False, family="scenario"))
    topo = _dump({"name": "t", "generator": "leaf_spine", "params": {"leaves": 2, "spines": 2, "hosts_per_leaf": 2,
                                                                    "bandwidth": "50 GB/s", "latency": "1 us"}})
    for i in range(20):
        cases.append(Case(f"edit:topology{i}", "topology", ["topology", "show", "t.yaml", "--html", "t.html"],
                          {"t.yaml": _mutate(topo, rng, rng.randint(1, 6))}))
    trace = json.dumps(HAND_TRACE, indent=1)
    for i in range(20):
        cases.append(Case(f"edit:trace{i}", "trace", ["trace", "validate", "trace.json"],
                          {"trace.json": _mutate(trace, rng, rng.randint(1, 8))}))
    log = NCCL_LOG.read_text(encoding="utf-8") if NCCL_LOG.exists() else ""
    for i in range(20):
        lines = log.splitlines()
        for _ in range(rng.randint(1, 3)):
            j, k = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[j], lines[k] = lines[k], lines[j]
        text = _mutate("\n".join(lines), rng, rng.randint(0, 4))
        cases.append(Case(f"edit:nccl{i}", "nccl", ["collective", "-t", "switch:2,50GB/s,500ns", "--compare",
                                                    "log.log", "--sizes", "1MiB"], {"log.log": text}))
    return cases


def corpus() -> list[Case]:
    """Every case, in a fixed order (seeded)."""
    rng = random.Random(16)
    cases = (_scenario_cases(rng) + _set_cases() + _topology_file_cases(rng) + _trace_cases(rng)
             + _collective_cases() + _sweep_cases() + _nccl_cases(rng) + _compress_cases() + _misc_cases()
             + _random_edit_cases(rng))
    seen: set[str] = set()
    unique = []
    for case in cases:
        if case.id in seen:
            continue
        seen.add(case.id)
        unique.append(case)
    return unique

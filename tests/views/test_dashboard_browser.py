"""A real browser opens a generated dashboard offline: every figure renders, no script errors, not blank;
on the showcase, the per-device breakdown and each device's exposed-communication lane are drawn and not empty."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from commsim.scenario import simulate

REPO = Path(__file__).resolve().parents[2]

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(BROWSER is None, reason="no headless Chromium on this machine (install Debian's 'chromium'; "
                                              ".ci/run does)"),
]


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             f"--user-data-dir={profile}",
             # networking off: any request outside the file would fail, so the page must be self-contained
             "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=30000"]
    return subprocess.run([BROWSER, *flags, *args], capture_output=True, text=True, timeout=180)


def _png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG (what Chromium writes) into an array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8).reshape(height, 1 + width * channels)
    out = np.zeros((height, width * channels), dtype=np.int32)
    prev = np.zeros(width * channels, dtype=np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 2:
            row = (line + prev) % 256
        else:  # filters that depend on the left neighbour: undo pixel by pixel
            row = np.zeros_like(line)
            for x in range(line.shape[0]):
                left = row[x - channels] if x >= channels else 0
                up_left = prev[x - channels] if x >= channels else 0
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + prev[x]) // 2
                else:
                    p = left + prev[x] - up_left
                    pa, pb, pc = abs(p - left), abs(p - prev[x]), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else (prev[x] if pb <= pc else up_left)
                row[x] = (line[x] + predictor) % 256
        out[y] = row
        prev = row
    return out.reshape(height, width, channels)[:, :, :3]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = simulate({"name": "browser", "topology": "switch:4,50GB/s,1us",
                    "workload": {"kind": "training", "model": "llama-2-7b", "tp": 4, "num_micro_batches": 1,
                                 "seq_len": 512}})
    return run.dashboard(tmp_path_factory.mktemp("dash") / "dashboard.html")


def test_every_figure_renders_without_script_errors(dashboard: Path, tmp_path: Path) -> None:
    html = dashboard.read_text()
    figures = len(re.findall(r'class="plotly-graph-div"', html))
    assert figures >= 3
    done = _chromium("--dump-dom", dashboard.as_uri(), profile=tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    rendered = len(re.findall(r'<svg class="main-svg"', dom))
    assert rendered >= figures, f"{rendered} plotly SVG layers for {figures} figures"
    errors = re.search(r'<div id="commsim-errors"[^>]*>(.*?)</div>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors.group(1) if errors else "no error box"
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
    assert not console, console


def test_screenshot_is_not_blank(dashboard: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", dashboard.as_uri(),
                     profile=tmp_path / "profile")
    assert shot.exists(), done.stderr[-2000:]
    pixels = _png_pixels(shot.read_bytes())
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 40
    assert pixels.std() > 20, "the page looks uniform"
    assert colourful.mean() > 0.01, "hardly any coloured pixels: the figures did not draw"


def test_dashboard_of_a_thousand_devices_stays_small_and_renders(tmp_path: Path) -> None:
    run = simulate({"name": "big", "topology": "fat_tree:k=16,bandwidth=400Gbps",
                    "workload": {"kind": "traffic", "flows": 3000, "load": 0.5},
                    "outputs": {"timeline_devices": ["gpu0", "gpu517", "gpu1023"]}})
    assert len(run.topology.devices) == 1024
    path = run.dashboard(tmp_path / "big.html")
    assert path.stat().st_size < 20 * 2**20
    done = _chromium("--dump-dom", path.as_uri(), profile=tmp_path / "profile")
    assert len(re.findall(r'<svg class="main-svg"', done.stdout)) >= 3


@pytest.fixture(scope="module")
def showcase(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The showcase scenario, one micro-batch of 1,024 tokens (the same mechanisms, a few seconds to run)."""
    run = simulate(REPO / "scenarios" / "showcase.yaml",
                   overrides={"workload.num_micro_batches": 1, "workload.seq_len": 1024, "faults.0.at": "20ms"})
    assert run.metrics["exposed_communication"][0] > 0
    return run.dashboard(tmp_path_factory.mktemp("showcase") / "dashboard.html")


def _rendered(path: Path, profile: Path) -> dict:
    done = _chromium("--dump-dom", path.as_uri(), profile=profile)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="commsim-rendered"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1).strip(), "the page did not report what it drew"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def test_showcase_shows_breakdown_and_exposed_communication_lanes(showcase: Path, tmp_path: Path) -> None:
    figures = _rendered(showcase, tmp_path / "profile")
    by_title = {f["title"].split(" (")[0].split(" —")[0]: f for f in figures.values()}
    breakdown = by_title["Where each device's time goes"]
    assert breakdown["drawn"] >= 16 * 2                       # 16 GPUs, at least compute and exposed parts
    assert breakdown["traces"]["compute"] == 16 and breakdown["traces"]["exposed TP"] == 16
    timeline = next(f for t, f in by_title.items() if t.startswith("Timeline"))
    assert timeline["drawn"] > 100
    assert timeline["traces"].get("exposed comm", 0) > 0     # the red lanes carry data ...
    assert sorted(timeline["rows"]["exposed comm"]) == sorted(f"gpu{g} · exposed comm" for g in range(16))  # each GPU
    assert timeline["traces"].get("critical path", 0) > 0
    table = showcase.read_text().split("<table class='metrics'>")[1].split("</table>")[0]
    assert re.search(r"<td>step time</td><td>\d+(\.\d+)? ms</td>", table)      # human units in the summary table
    assert re.search(r"<td>bytes sent</td><td>\d+(\.\d+)? GiB</td>", table)

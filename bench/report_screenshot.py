"""Render the bundled example's HTML report in headless Chromium, check that it rendered, and save the
screenshot as docs/report.png (kept under 300 KB); with --run, the same for a training run's report.

    python bench/report_screenshot.py                         # prepares examples/demo.yaml if needed
    python bench/report_screenshot.py --prepared prepared/my --out /tmp/my.png
    python bench/report_screenshot.py --run outputs/demo --out docs/train_report.png

Needs a Chromium (`apt-get install -y chromium` on Debian); CI does not run this, the tests check the HTML
itself (tests/dataprep/test_html_report.py). Chromium runs offline-ish: no background networking, no
component updates, no sync, a fresh profile in a temp folder; the report loads nothing anyway.

Checks, in order:

    dom         `--dump-dom`: the page parses, with its charts (<svg>: 3, or 6 for a run) and the summary cards
    screenshot  `--screenshot` at --window-size; the PNG has that size
    pixels      (with Pillow) the page is not blank and both chart colours are on it, i.e. the inline SVG
                was drawn; then the PNG is reduced to a 256-colour palette so docs/ stays small
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataprep.cli import main as tessera  # noqa: E402
from dataprep.look.html import ALL, TRAINED  # noqa: E402
from dataprep.look.html_report import build  # noqa: E402
from train.report import EVAL  # noqa: E402
from train.report import build as build_run  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAX_PNG = 300 * 1024


def chromium_args(browser: str, profile: Path) -> list[str]:
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            "--force-device-scale-factor=1", f"--user-data-dir={profile}"]


def run(cmd: list[str], timeout: int = 90) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return done


def check_pixels(png: Path, size: tuple[int, int], out: Path, chart_colors: dict[str, str]) -> None:
    try:
        from PIL import Image
    except ImportError:
        print("pixels: Pillow not installed; skipped (PNG copied as is)")
        shutil.copyfile(png, out)
        return
    img = Image.open(png).convert("RGB")
    assert img.size == size, f"screenshot is {img.size}, expected {size}"
    colors = img.getcolors(maxcolors=1 << 20) or []
    background = max(colors)[1]
    drawn = sum(n for n, c in colors if c != background) / (size[0] * size[1])
    assert len(colors) > 50 and drawn > 0.05, f"the page looks blank ({len(colors)} colours, {drawn:.1%} drawn)"
    present = {c for _, c in colors}
    for name, hex_color in chart_colors.items():
        rgb = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
        assert rgb in present, f"chart colour {hex_color} ({name}) not on the page: the SVG was not drawn"
    print(f"pixels: {len(colors):,} colours, {drawn:.1%} of the page drawn, chart colours present: "
          f"{', '.join(chart_colors)}")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "examples/demo.yaml")
    p.add_argument("--prepared", type=Path, default=ROOT / "prepared/demo",
                   help="prepared directory (prepared from --config when missing or out of date)")
    p.add_argument("--run", type=Path, help="a training run's output_dir: screenshot its report instead")
    p.add_argument("--out", type=Path, help="PNG to write (default: docs/report.png, docs/train_report.png with "
                   "--run)")
    p.add_argument("--window-size", default="1200,1760", help="WIDTH,HEIGHT of the screenshot")
    p.add_argument("--chromium", help="browser binary (default: the first of " + ", ".join(BROWSERS) + ")")
    args = p.parse_args()

    browser = args.chromium or next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        sys.exit("no Chromium found: apt-get update && apt-get install -y chromium (or pass --chromium PATH)")
    if args.run is None and args.prepared == ROOT / "prepared/demo" and tessera(
            ["prepare", str(args.config), "--out", str(args.prepared)]) != 0:
        sys.exit("tessera prepare failed")
    width, height = (int(x) for x in args.window_size.split(","))
    if args.run is not None:  # a training run: loss (train + eval) and per-dataset lines, throughput
        args.out = args.out or ROOT / "docs/train_report.png"
        charts, cards, colors = 6, ("train loss, first", "tokens seen"), {"train": ALL, "eval": EVAL,
                                                                         "trained tokens/s": TRAINED}
    else:
        args.out = args.out or ROOT / "docs/report.png"
        charts, cards, colors = 3, ("packing efficiency", "input rows"), {"all tokens": ALL, "trained": TRAINED}

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        page = build_run(args.run, args.run.parent / f"{args.run.name}.report.html") if args.run else build(
            args.prepared)
        html.write_text(page, encoding="utf-8")
        print(f"report: {len(page.encode()) / 1024:.0f} KB of HTML")

        dom = run([*chromium_args(browser, Path(tmp) / "profile-dom"), "--dump-dom", html.as_uri()]).stdout
        assert dom.count("<svg") == charts, f"expected {charts} charts in the rendered DOM, found {dom.count('<svg')}"
        assert all(c in dom for c in cards), "summary cards missing from the DOM"
        print(f"dom: parsed by {browser}, {len(dom):,} characters, {charts} charts")

        shot = Path(tmp) / "shot.png"
        run([*chromium_args(browser, Path(tmp) / "profile-shot"), f"--screenshot={shot}",
             f"--window-size={width},{height}", html.as_uri()])
        assert shot.is_file() and shot.stat().st_size > 10_000, "no screenshot written"
        print(f"screenshot: {width}x{height}, {shot.stat().st_size / 1024:.0f} KB")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        check_pixels(shot, (width, height), args.out, colors)

    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1024:.0f} KB)")
    if size > MAX_PNG:
        sys.exit(f"{args.out} is {size / 1024:.0f} KB, over {MAX_PNG // 1024} KB: use a smaller --window-size")
    return 0


if __name__ == "__main__":
    sys.exit(main())

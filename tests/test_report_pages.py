import base64
import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image
from typer.testing import CliRunner

from meobench.cli import app
from meobench.errors import MeobenchError
from meobench.report_pages import speedup_summary, write_reports
from meobench.saved_run import load_run
from tests.chromium import chromium_path, render
from tests.synthetic_runs import FAILED_ERROR, synthetic_frame, write_run_directory

# The synthetic run draws latency, FLOPs, speedup against batch size and memory; see synthetic_frame.
DRAWN = ["latency_vs_top_k", "gflops_vs_top_k", "speedup_vs_batch_size", "peak_memory_vs_batch_size"]


class PageParser(HTMLParser):
    """Collects images, external references, scripts and the rows of each table."""

    def __init__(self):
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.tables: list[list[list[str]]] = []
        self.scripts = 0
        self.links: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes)
        elif tag == "script":
            self.scripts += 1
        elif tag == "a":
            self.links.append(attributes.get("href", ""))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture
def run_dir(tmp_path):
    return write_run_directory(tmp_path / "run")


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A synthetic run directory with every report file written once for the module (drawing takes seconds)."""
    run_dir = write_run_directory(tmp_path_factory.mktemp("reported") / "run")
    return run_dir, write_reports(run_dir)


def parse(path):
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_html_embeds_every_drawn_plot(reported):
    run_dir, files = reported
    page = parse(files.html)
    assert [image["alt"] for image in page.images] == [
        "Latency against top-k",
        "FLOPs against top-k, MoE and MEO",
        "Speedup of MEO over MoE against batch size",
        "Peak memory against batch size",
    ]
    for image, name in zip(page.images, DRAWN):
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        data = base64.b64decode(image["src"][len(prefix) :])
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.verify()
        # The inline image and the saved PNG are the same rendering of the same frame.
        assert data == (run_dir / "plots" / f"{name}.png").read_bytes()


def test_html_results_table_has_every_row(reported):
    _, files = reported
    results = parse(files.html).tables[1]
    header, rows = results[0], results[1:]
    # 36 ok cases, 1 skipped, 1 failed.
    assert len(rows) == 38
    assert header[:2] == ["variant", "strategy"]
    assert "median (ms)" in header
    median = header.index("median (ms)")
    # moe-sequence n=4 k=2 b=8: 2 * 2 * 8 = 32 ms, as in results.csv.
    row = next(r for r in rows if r[:5] == ["moe-sequence", "loop", "4", "2", "8"])
    assert row[median] == "32.000"


def test_html_lists_unmeasured_cases_and_left_out_plots(reported):
    _, files = reported
    text = files.html.read_text()
    not_measured = parse(files.html).tables[2]
    assert not_measured[0] == ["case id", "status", "error"]
    assert ["meo-sequence.gather.n8-k2-b8", "failed", FAILED_ERROR] in not_measured
    assert len(not_measured) == 3
    assert "Speedup of MEO over MoE against sequence length: the run measured a single seq_len (16)" in text
    assert "Roofline: achieved FLOP/s against arithmetic intensity: the run has no achieved_tflops" in text


def test_html_loads_nothing_external(reported):
    _, files = reported
    page = parse(files.html)
    assert page.scripts == 0
    assert all(image["src"].startswith("data:") for image in page.images)
    assert all(link.startswith("#") for link in page.links)
    assert "Content-Security-Policy" in files.html.read_text()


def test_html_shows_environment_and_caption(reported):
    _, files = reported
    text = files.html.read_text()
    assert "synthetic · cpu (Test CPU) · 2026-01-02 03:04:05 UTC" in text
    assert "2.13.0+cpu" in text


def test_markdown_links_saved_plots(reported):
    run_dir, files = reported
    text = files.markdown.read_text()
    for name in DRAWN:
        assert f"(plots/{name}.png)" in text
        assert (run_dir / "plots" / f"{name}.png").is_file()
    table_rows = [line for line in text.splitlines() if line.startswith("| ")]
    # Summary: header + 1 variant; results: header + 38 cases; not measured: header + 2 cases.
    assert len(table_rows) == 2 + 39 + 3
    assert "left out, the run measured a single seq_len (16)" in text


def test_load_run_missing_directory(tmp_path):
    with pytest.raises(MeobenchError, match="run directory not found"):
        load_run(tmp_path / "absent")


def test_load_run_empty_directory(tmp_path):
    with pytest.raises(MeobenchError, match="contains neither results.csv nor results.jsonl"):
        load_run(tmp_path)


def test_load_run_reads_jsonl_without_csv(tmp_path):
    frame = synthetic_frame()
    lines = [json.dumps({**record, "latency_samples_s": [0.001]}) for record in frame.to_dict("records")]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    run = load_run(tmp_path)
    assert len(run.frame) == 38
    assert "latency_samples_s" not in run.frame
    assert run.date == "date unknown"


def test_report_command_writes_all_files(run_dir):
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").is_file()
    assert (run_dir / "report.md").is_file()
    assert sorted(path.name for path in (run_dir / "plots").iterdir()) == sorted(f"{name}.png" for name in DRAWN)
    assert "Left out 'Latency per device': the run measured a single device." in result.output


def test_report_command_svg(tmp_path):
    frame = synthetic_frame()
    # Fewer panels: SVG output takes seconds per large figure.
    run_dir = write_run_directory(tmp_path / "run", frame[(frame["num_experts"] == 4) & (frame["batch_size"] == 1)])
    result = CliRunner().invoke(app, ["report", str(run_dir), "--plots", "--svg"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "plots" / "latency_vs_top_k.svg").is_file()
    assert not (run_dir / "report.html").exists()


def test_report_command_missing_directory(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert "run directory not found" in result.output


needs_chromium = pytest.mark.skipif(
    chromium_path() is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
)


@needs_chromium
def test_report_renders_in_chromium(reported, tmp_path):
    _, files = reported
    rendering = render(files.html, tmp_path / "screenshot.png", width=1200, height=2400)
    assert rendering.console_messages == []
    with Image.open(rendering.screenshot) as screenshot:
        assert screenshot.size == (1200, 2400)
        colours = dict((colour, count) for count, colour in screenshot.convert("RGB").getcolors(maxcolors=2**24))
    # The line colours of dense (matplotlib's C0 blue) and meo-sequence (C4 purple) appear only in a drawn plot.
    assert colours.get((31, 119, 180), 0) > 100
    assert colours.get((148, 103, 189), 0) > 100


@needs_chromium
def test_chromium_check_reports_console_messages(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>console.error('deliberate error')</script></body></html>")
    rendering = render(page, tmp_path / "broken.png", width=400, height=300)
    assert any("deliberate error" in message for message in rendering.console_messages)


def test_speedup_summary_by_top_k():
    table, sentence = speedup_summary(synthetic_frame())
    # dense has no speedup in the synthetic frame, and moe-sequence, run with one strategy, is its own reference.
    # meo-sequence is 2k/3 at every n and b.
    assert list(table.index) == [("meo-sequence", "gemm")]
    assert list(table.columns) == ["k=1", "k=2", "k=4"]
    assert list(table.loc[("meo-sequence", "gemm")]) == pytest.approx([2 / 3, 4 / 3, 8 / 3])
    assert "taken across num_experts and batch_size" in sentence


def test_html_summary_table(reported):
    _, files = reported
    summary = parse(files.html).tables[0]
    assert summary[0] == ["variant", "strategy", "k=1", "k=2", "k=4"]
    assert summary[1:] == [["meo-sequence", "gemm", "0.67", "1.33", "2.67"]]


def test_report_without_measured_cases(tmp_path):
    frame = synthetic_frame()
    run_dir = write_run_directory(tmp_path / "run", frame[frame["status"] != "ok"])
    files = write_reports(run_dir)
    page = parse(files.html)
    assert page.images == []
    assert files.plots == []
    assert "Latency against top-k: no case was measured: every case was skipped or failed." in files.html.read_text()
    # The table of cases not measured lists the skipped and the failed case.
    assert len(page.tables[-1]) == 3

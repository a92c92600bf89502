from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline import __version__
from pipeline.cli import COMMANDS, build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"radpipe {__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: radpipe" in capsys.readouterr().out


def test_every_command_has_help():
    parser = build_parser()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([command.name, "--help"])
        assert e.value.code == 0


def test_help_does_not_import_heavy_packages():
    code = (
        "import sys; from pipeline.cli import build_parser; build_parser().format_help(); "
        "heavy = [m for m in ('torch', 'monai', 'pydicom', 'pandas', 'nibabel') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_python_m_pipeline_runs():
    result = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout


def test_pipeline_error_is_one_line_exit_2(capsys, monkeypatch):
    from pipeline import cli
    from pipeline.errors import ConfigError

    def handler(args):
        raise ConfigError("config key 'train.epochz' unknown;\n  fix it")

    monkeypatch.setattr(cli, "_resolve", lambda name: handler)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("radpipe demo: error: config key 'train.epochz' unknown; fix it")


def test_other_errors_keep_traceback(monkeypatch):
    from pipeline import cli

    def handler(args):
        raise RuntimeError("bug")

    monkeypatch.setattr(cli, "_resolve", lambda name: handler)
    with pytest.raises(RuntimeError, match="bug"):
        main(["demo"])


@pytest.mark.parametrize("command", ["train", "evaluate", "preview", "predict"])
def test_error_wrapped_by_monai_is_one_line_exit_2(capsys, monkeypatch, command):
    from pipeline import cli
    from pipeline.errors import ImageReadError

    def in_process(args):
        try:
            raise ImageReadError("/data/x.tif: holds 2 frames (pages); save each frame as its own file")
        except ImageReadError as e:
            raise RuntimeError("applying transform <LoadImaged>") from e

    def from_worker(args):  # a DataLoader worker sends the traceback back as text
        raise RuntimeError("Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                           "last):\n  File \"x.py\", line 1\ntransforms.limits.ImageTooLargeError: /data/y.png: header "
                           "claims 9x9x3 RGB values, over the limit\n\nThe above exception was the direct cause\n"
                           "RuntimeError: applying transform")

    for handler, expected in ((in_process, "/data/x.tif: holds 2 frames"), (from_worker, "/data/y.png: header claims")):
        monkeypatch.setattr(cli, "_resolve", lambda name, h=handler: h)
        assert main(_minimal_args(command)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"radpipe {command}: error: {expected}")


def _minimal_args(command):
    return {"train": ["train"], "evaluate": ["evaluate", "--run", "r", "--manifest", "m.csv", "--out", "p.csv"],
            "preview": ["preview", "--config", "c.yaml", "--out", "p.png"],
            "predict": ["predict", "--run", "r", "in", "--out", "p.csv"]}[command]


@pytest.mark.parametrize("command", ["scan", "convert"])
def test_scan_and_convert_end_without_teardown_and_lose_nothing(tmp_path, monkeypatch, command):
    from pipeline import cli
    from pipeline.demo.synthetic_dicom import SeriesSpec, write_series

    write_series(tmp_path / "export" / "s1", SeriesSpec(rows=8, cols=8, n_slices=3))
    out = tmp_path / "out"
    target = ["--out", str(out / "index.csv")] if command == "scan" else [str(out)]
    argv = [command, str(tmp_path / "export"), *target, "--workers", "1"]
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(cli.threading, "active_count", lambda: 1)  # other tests may leave threads in this process
    monkeypatch.setattr(cli, "_child_processes", lambda: False)
    monkeypatch.setattr(sys, "argv", ["radpipe", *argv])
    with pytest.raises(SystemExit):
        cli.run()
    assert exits == [0] and (out / "index.csv").stat().st_size > 0
    missing = [str(tmp_path / "missing"), *(["--out", str(out / "i2.csv")] if command == "scan" else [str(out / "c")])]
    monkeypatch.setattr(sys, "argv", ["radpipe", command, *missing])
    with pytest.raises(SystemExit) as raised:  # an error: still a fast exit, with the status main returned
        cli.run()
    assert exits == [0, 2] and raised.value.code == 2


def test_other_commands_and_a_live_thread_exit_as_usual(monkeypatch, tmp_path):
    from pipeline import cli

    monkeypatch.setattr(cli.os, "_exit", lambda code: pytest.fail("os._exit called"))
    monkeypatch.setattr(sys, "argv", ["radpipe", "split", "--help"])
    with pytest.raises(SystemExit) as raised:
        cli.run()
    assert raised.value.code == 0
    monkeypatch.setattr(cli.threading, "active_count", lambda: 2)  # a thread still running: teardown waits for it
    monkeypatch.setattr(sys, "argv", ["radpipe", "scan", str(tmp_path / "none"), "--out", str(tmp_path / "i.csv")])
    with pytest.raises(SystemExit) as raised:
        cli.run()
    assert raised.value.code == 2


def test_radpipe_scan_process_writes_everything_and_its_log(tmp_path):
    from pipeline.demo.synthetic_dicom import SeriesSpec, write_series

    write_series(tmp_path / "export" / "s1", SeriesSpec(rows=8, cols=8, n_slices=3))
    result = subprocess.run([sys.executable, "-m", "pipeline", "scan", str(tmp_path / "export"), "--out",
                             str(tmp_path / "index.csv"), "--workers", "2"], capture_output=True, text=True,
                            env={**__import__("os").environ, "RADPIPE_SECRET_FILE": str(tmp_path / "k")})
    assert result.returncode == 0
    assert "series" in result.stdout + result.stderr
    rows = (tmp_path / "index.csv").read_text().splitlines()
    assert len(rows) == 2 and (tmp_path / "index.scan-cache.json").stat().st_size > 0

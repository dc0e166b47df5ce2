"""tdlib.sweep: the same bits serially, on two local workers and on a Dask cluster started here
(a scheduler and two workers on 127.0.0.1); a worker killed mid-sweep; a command interrupted
and resumed; checks before any task runs; quiet progress."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sweeptasks
from conftest import ROOT
from tdlib import book, experiments, phase, sweep

TINY = dict(ratios=[1.0, 2.0], ds=[1, 2], init_scales=[1.0], instances=2, steps=32,
            max_steps=64, N=2, n=2, audit=1)
TINY_ARGS = ["--ratios", "1", "2", "--ds", "1", "2", "--init-scales", "1", "--instances", "2",
             "--steps", "32", "--max-steps", "64", "--N", "2", "--n", "2", "--audit", "1",
             "--quiet"]


def _env() -> dict:
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                OPENBLAS_NUM_THREADS="1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_command() -> str:
    here = Path(sys.executable).with_name("dask")
    return str(here) if here.exists() else "dask"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``dask scheduler`` and ``dask worker`` (two processes, one thread each) on 127.0.0.1, as
    a reader would start them; yields the scheduler's address."""
    from distributed import Client

    log = tmp_path_factory.mktemp("cluster")
    address = f"tcp://127.0.0.1:{_free_port()}"
    dask = _dask_command()
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port",
                               address.rsplit(":", 1)[1], "--no-dashboard"], env=_env(),
                              stdout=open(log / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "2", "--nthreads",
                                   "1", "--host", "127.0.0.1", "--no-dashboard"], env=_env(),
                                  stdout=open(log / "workers.log", "w"),
                                  stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout="5s") as c:
                    if len(c.scheduler_info()["workers"]) == 2:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not start: "
                                   + (log / "workers.log").read_text()[-2000:])
            time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _bits(results) -> str:
    return json.dumps(results, sort_keys=True)


def test_same_bits_serially_on_local_workers_and_on_a_cluster(cluster):
    cfg = phase.SweepConfig(**TINY).validate()
    tasks = phase._sweep_tasks(cfg)
    runs = {}
    for name, kw in (("serial", {"workers": 1}), ("local", {"workers": 2}),
                     ("cluster", {"scheduler": cluster})):
        info = {}
        runs[name] = sweep.run(phase._cell_runs, tasks, quiet=True, info=info, **kw)
        assert info["mode"] == name and info["tasks"] == len(tasks) == 8
        assert info["workers"] == (1 if name == "serial" else 2), info
        print(f"{name}: {info['wall_seconds']:.1f} s")
    assert _bits(runs["serial"]) == _bits(runs["local"]) == _bits(runs["cluster"])


def test_results_come_back_in_task_order(cluster):
    # the first tasks sleep longest, so they finish last
    tasks = [{"seed": s, "pause": 0.3 * (5 - s)} for s in range(6)]
    out = sweep.run(sweeptasks.slow_probe, tasks, scheduler=cluster, quiet=True)
    assert [r["seed"] for r in out] == list(range(6))
    assert out == sweep.run(sweeptasks.slow_probe, tasks, workers=1, quiet=True)


def test_a_worker_killed_mid_sweep_on_the_cluster(cluster, tmp_path):
    marker = tmp_path / "killed"
    tasks = [{"seed": s, "marker": str(marker) if s == 3 else ""} for s in range(8)]
    out = sweep.run(sweeptasks.fragile_probe, tasks, scheduler=cluster, quiet=True,
                    checkpoint=tmp_path / "parts")
    assert marker.exists(), "the fault was not injected"
    assert _bits(out) == _bits(sweep.run(sweeptasks.fragile_probe, tasks, workers=1,
                                         quiet=True))
    assert len(list((tmp_path / "parts").glob("*.part"))) == 8


def test_a_worker_killed_mid_sweep_on_local_workers(tmp_path):
    marker = tmp_path / "killed"
    tasks = [{"seed": s, "marker": str(marker) if s == 2 else ""} for s in range(6)]
    info = {}
    out = sweep.run(sweeptasks.fragile_probe, tasks, workers=2, quiet=True, info=info)
    assert marker.exists() and info["mode"] == "local"
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # that worker process is gone
    assert _bits(out) == _bits([sweep.probe(s, steps=30) for s in range(6)])


def test_local_workers_get_the_quiet_settings():
    # Dask's defaults first, for the benchmark's control, when asked: they do not leak into
    # this process's environment (Dask's nanny writes its workers' variables there)
    from distributed import Client

    before = dict(os.environ)
    cluster = sweep.start_local(1, tuned=False)
    try:
        with Client(cluster, set_as_default=False) as c:
            r = c.submit(sweeptasks.worker_settings, 0, pure=False).result()
    finally:
        cluster.close()
    assert r["profile"] is True and r["trim"] is not None and r["omp"] == "1", r
    assert dict(os.environ) == before
    # then the tuned cluster: the profiler off, rare ticks, no glibc trim threshold, one
    # thread, in every worker
    tasks = [{"seed": s} for s in range(4)]
    out = sweep.run(sweeptasks.worker_settings, tasks, workers=2, quiet=True)
    assert {r["pid"] for r in out} - {os.getpid()}, "the tasks did not leave this process"
    for r in out:
        assert r["profile"] is False and r["tick"] == sweep.LOCAL_CONFIG[
            "distributed.admin.tick.interval"] and r["trim"] is None and r["omp"] == "1", r


def test_an_interrupted_command_resumes(tmp_path):
    out, parts = tmp_path / "out", tmp_path / "parts"
    cmd = [sys.executable, "-m", "tdlib.phase", "--out", str(out), *TINY_ARGS, "--serial",
           "--checkpoint", str(parts)]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list(parts.glob("*.part")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no task finished in 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0, log
    assert not (out / "results.json").exists(), "a final file before every task was in"
    done = len(list(parts.glob("*.part")))
    assert 1 <= done < 8, done
    again = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    res = book.load_json(out / "results.json")
    prov = res["provenance"]
    assert prov["resumed"] == done and prov["tasks"] == 8 and prov["mode"] == "serial"
    assert prov["command"].startswith("python -m tdlib.phase --out")
    assert not parts.exists(), "the parts are removed once the final file is written"
    fresh = phase.sweep(phase.SweepConfig(**TINY))
    assert res["results"] == fresh["results"] and res["config"] == fresh["config"]


def test_checkpoint_reuses_sound_parts_only(tmp_path):
    tasks = [{"seed": s} for s in range(4)]
    first = sweep.run(sweep.probe, tasks, workers=1, checkpoint=tmp_path, quiet=True)
    parts = sorted(tmp_path.glob("*.part"))
    assert len(parts) == 4
    assert {p.stem for p in parts} == {sweep.task_key("tdlib.sweep:probe", t) for t in tasks}
    parts[0].write_text('{"fn": "tdlib.sweep:probe", "task": ')           # cut short
    doc = json.loads(parts[1].read_text())
    parts[1].write_text(json.dumps({**doc, "code": "0" * 64}))           # other code
    doc = json.loads(parts[2].read_text())
    parts[2].write_text(json.dumps({**doc, "result": {"seed": -1}, "task": {"seed": 99}}))
    info = {}
    again = sweep.run(sweep.probe, tasks, workers=1, checkpoint=tmp_path, quiet=True, info=info)
    assert info["resumed"] == 1 and again == first


def test_checks_before_any_task_runs(tmp_path, monkeypatch):
    ok = [{"seed": 1}]
    with pytest.raises(ValueError, match="top level of an importable module"):
        sweep.run(lambda seed: seed, ok, workers=1)
    with pytest.raises(TypeError, match="expected a list of dicts"):
        sweep.run(sweep.probe, {"seed": 1}, workers=1)
    with pytest.raises(TypeError, match=r"tasks\[1\]: expected a dict"):
        sweep.run(sweep.probe, [{"seed": 1}, 2], workers=1)
    with pytest.raises(ValueError, match=r"tasks\[0\]: expected JSON-serialisable"):
        sweep.run(sweep.probe, [{"seed": object()}], workers=1)
    with pytest.raises(ValueError, match=r"tasks\[0\]: expected JSON-serialisable"):
        sweep.run(sweep.probe, [{"seed": float("nan")}], workers=1)
    with pytest.raises(ValueError, match=r"tasks\[2\]: the same task as tasks\[0\]"):
        sweep.run(sweep.probe, [{"seed": 1}, {"seed": 2}, {"seed": 1}], workers=1)
    with pytest.raises(ValueError, match=r"tasks\[1\].*seed must be even"):
        def even(seed):
            if seed % 2:
                raise ValueError("seed must be even")
        sweep.run(sweep.probe, [{"seed": 2}, {"seed": 3}], workers=1, check=even)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers: expected a whole number"):
            sweep.run(sweep.probe, ok, workers=bad)
    with pytest.raises(ValueError, match="expected one of them"):
        sweep.run(sweep.probe, ok, workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        sweep.run(sweep.probe, ok, scheduler="localhost")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="checkpoint: expected a folder"):
        sweep.run(sweep.probe, ok, workers=1, checkpoint=tmp_path / "file")
    # memory: refused before any task runs (nothing reaches the checkpoint)
    with pytest.raises(MemoryError, match="GiB are available"):
        sweep.run(sweep.probe, ok, workers=1, memory_per_task=1e18, checkpoint=tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.part"))
    monkeypatch.setattr(sweep, "available_memory", lambda: 2**20)
    with pytest.raises(MemoryError, match="fewer workers or a smaller grid"):
        phase.sweep(phase.SweepConfig(**TINY))
    # results must be JSON numbers: NaN becomes null, an infinity is refused with the task
    assert sweep.run(sweeptasks.with_nan, ok, workers=1) == [{"seed": 1, "x": None}]
    with pytest.raises(ValueError, match="JSON-serialisable result"):
        sweep.run(sweeptasks.with_inf, ok, workers=1)
    with pytest.raises(ArithmeticError, match="seed 3 is odd"):
        sweep.run(sweeptasks.failing, [{"seed": 2}, {"seed": 3}], workers=1)


def test_scheduler_from_the_environment(monkeypatch):
    monkeypatch.setenv(sweep.SCHEDULER_ENV, "tcp://10.0.0.1:8786")
    assert sweep.resolve() == ("cluster", None, "tcp://10.0.0.1:8786")
    assert sweep.resolve(workers=1) == ("serial", 1, None)
    monkeypatch.delenv(sweep.SCHEDULER_ENV)
    mode, workers, _ = sweep.resolve()
    assert workers == sweep.cores() and mode == ("serial" if workers == 1 else "local")


def test_command_line_refuses_contradictory_options(tmp_path, capsys):
    for extra in (["--serial", "--workers", "2"], ["--workers", "2", "--scheduler", "tcp://h:1"],
                  ["--workers", "0"], ["--scheduler", "nowhere"]):
        with pytest.raises(SystemExit):
            phase.main(["--out", str(tmp_path), *TINY_ARGS, *extra])
        assert "bad configuration" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing is written"


def test_progress_bar_and_quiet(capsys, monkeypatch):
    tasks = [{"seed": s, "steps": 5} for s in range(3)]
    monkeypatch.delenv("TDLIB_STATIC_WIDGETS", raising=False)
    sweep.run(sweep.probe, tasks, workers=1, desc="probe")
    err = capsys.readouterr().err
    assert "probe" in err and "/3 " in err, err
    sweep.run(sweep.probe, tasks, workers=1, quiet=True)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TDLIB_STATIC_WIDGETS", "1")  # set by the book's build
    sweep.run(sweep.probe, tasks, workers=1)
    assert capsys.readouterr().err == ""


def _tiny_experiment(tmp_path) -> list:
    return ["--task", "pathfinder", "--n-train", "16", "--n-test", "8", "--steps", "4",
            "--eval-every", "2", "--batch-size", "4", "--D", "8", "--hidden", "8", "--layers",
            "1", "--cache-dir", str(tmp_path / "data"), "--quiet"]


def test_experiment_seeds_the_same_on_local_workers_as_serially(tmp_path):
    common = ["curves", *_tiny_experiment(tmp_path), "--seeds", "0", "1"]
    serial, local = tmp_path / "serial.json", tmp_path / "local.json"
    assert experiments.main([*common, "--serial", "--out", str(serial)]) == 0
    assert experiments.main([*common, "--workers", "2", "--out", str(local)]) == 0
    a, b = book.load_json(serial), book.load_json(local)
    assert [(r["kernel"], r["seed"]) for r in b["runs"]] == [
        ("softmax", 0), ("softmax", 1), ("gaussian", 0), ("gaussian", 1)]
    assert _bits([r["curves"] for r in a["runs"]]) == _bits([r["curves"] for r in b["runs"]])
    assert all(r["torch_threads"] == 1 for r in a["runs"] + b["runs"])
    assert (a["provenance"]["mode"], b["provenance"]["mode"]) == ("serial", "local")
    assert b["provenance"]["workers"] == 2 and b["provenance"]["wall_seconds"] > 0
    assert not list(tmp_path.glob(".*.sweep-parts")), "parts are removed after the output"


def test_landscape_the_same_on_a_cluster_as_serially(cluster, tmp_path):
    cfg = experiments.ExperimentConfig(task="pathfinder", n_train=16, n_test=8, steps=3,
                                       eval_every=3, batch_size=4, D=8, hidden=8, layers=1,
                                       cache_dir=str(tmp_path / "data"))
    kw = dict(stage1_steps=3, grid=5, span=0.5, n_loss=8, near_seeds=[1], progress=False)
    a, meta_a = experiments.landscape_run(cfg, **kw)
    b, meta_b = experiments.landscape_run(cfg, scheduler=cluster, **kw)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes() if hasattr(a[k], "tobytes") else a[k] == b[k], k
    assert meta_a["stage2"]["gaussian"]["curves"] == meta_b["stage2"]["gaussian"]["curves"]
    assert meta_b["provenance"]["mode"] == "cluster" and meta_b["provenance"]["workers"] == 2

"""The classifier built from tdlib's kernels, and the experiment runner."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tdlib import make_kernel
from tdlib.experiments import ExperimentConfig, load, main, save, train_model
from tdlib.transformer import Classifier, ModelConfig


def test_paper_configuration_and_kernel_swap():
    soft = Classifier(ModelConfig(kernel="softmax"), seed=4)
    gauss = Classifier(ModelConfig(kernel="gaussian"), seed=4)
    assert soft.cfg.D == 64 and soft.cfg.hidden == 128 and soft.cfg.H == 2 and len(soft.blocks) == 2
    sd, gd = soft.state_dict(), gauss.state_dict()
    assert sd.keys() == gd.keys() and all(torch.equal(sd[k], gd[k]) for k in sd)  # same weights
    x = torch.randint(1, 256, (3, 20))
    assert not torch.allclose(soft(x), gauss(x))  # the kernel is the only difference
    assert torch.allclose(soft.set_kernel("gaussian")(x), gauss(x))


def test_attention_uses_the_tdlib_kernel():
    for kernel in ("softmax", "gaussian"):
        m = Classifier(ModelConfig(max_len=10, D=8, hidden=16, H=2, kernel=kernel), seed=1)
        att = m.blocks[0].attn
        Z = torch.randn(2, 10, 8)
        Wq, Wk, Wv = att.W_QKV.weight.T.split(8, dim=1)
        heads = []
        for h in range(2):
            sl = slice(4 * h, 4 * h + 4)
            S = make_kernel(kernel)(Z @ Wq[:, sl], Z @ Wk[:, sl])
            heads.append(S @ (Z @ Wv[:, sl]))
        expected = att.W_O(torch.cat(heads, -1))
        assert torch.allclose(att(Z), expected, atol=1e-5)


def test_learns_an_easy_task():
    # label = whether the sequence is made of token 7 or token 9: both kernels must learn it
    g = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    y = torch.randint(0, 2, (64,), generator=g)
    x = torch.where(y[:, None] == 1, 7, 9).repeat(1, 6)
    x[:, ::2] = torch.randint(1, 256, (64, 3), generator=g)  # noise tokens
    for kernel in ("softmax", "gaussian"):
        m = Classifier(ModelConfig(max_len=6, D=16, hidden=32, H=2, kernel=kernel), seed=0)
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        for _ in range(60):
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = float((m(x).argmax(-1) == y).float().mean())
        assert acc == 1.0, f"{kernel}: accuracy {acc}"


@pytest.mark.parametrize("bad, match", [
    (dict(task="images"), "task"),
    (dict(kernel="softmx"), "kernel"),
    (dict(lr=0.0), "lr"),
    (dict(steps=10, eval_every=20), "eval_every"),
    (dict(D=63), "divisible"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(task="pathfinder", image_size=20), "image_size"),
    (dict(momentum=1.5), "momentum"),
])
def test_bad_configurations_fail_fast(bad, match):
    with pytest.raises(ValueError, match=match):
        ExperimentConfig(**bad).resolved()


def test_input_checks():
    m = Classifier(ModelConfig(max_len=8, D=8, hidden=8, H=2))
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="ids"):
        m(torch.full((1, 4), 300))
    with pytest.raises(TypeError):
        m(torch.zeros(1, 4))


def tiny_cfg(tmp_path, **kw):
    base = dict(task="pathfinder", n_train=24, n_test=12, steps=4, eval_every=2, batch_size=8,
                D=8, hidden=16, layers=1, cache_dir=str(tmp_path))
    return ExperimentConfig(**{**base, **kw})


def test_run_records_and_is_reproducible(tmp_path):
    cfg = tiny_cfg(tmp_path, kernel="gaussian", seed=2)
    _, r1 = train_model(cfg, progress=False)
    _, r2 = train_model(cfg, progress=False)
    assert r1["curves"]["step"] == [0, 2, 4]
    assert r1["curves"]["test_loss"] == r2["curves"]["test_loss"]
    assert all(0 <= a <= 1 for a in r1["curves"]["test_acc"])
    assert r1["config"]["optimizer"] == "adam" and r1["seconds"] > 0 and "torch" in r1["versions"]
    path = save([r1], tmp_path / "out.json", command="test")
    doc = load(path)
    assert doc["provenance"]["command"] == "test" and doc["runs"][0]["curves"]["test_acc"] == r1["curves"]["test_acc"]


def test_command_line(tmp_path, capsys):
    out = tmp_path / "curves.json"
    main(["curves", "--task", "pathfinder", "--n-train", "16", "--n-test", "8", "--steps", "2",
          "--eval-every", "1", "--batch-size", "4", "--D", "8", "--hidden", "8", "--layers", "1",
          "--seeds", "0", "--cache-dir", str(tmp_path), "--out", str(out), "--quiet"])
    doc = json.loads(out.read_text())
    assert [r["kernel"] for r in doc["runs"]] == ["softmax", "gaussian"]
    assert doc["provenance"]["command"].startswith("python -m tdlib.experiments curves")
    with pytest.raises(SystemExit):
        main(["curves", "--task", "text", "--kernels", "nope", "--out", str(out)])
    assert "kernel" in capsys.readouterr().err


def test_merge_records_a_command_that_remakes_the_file(tmp_path):
    parts = []
    for k in ("softmax", "gaussian"):
        run = {"kernel": k, "seconds": 1.5, "curves": {"step": [0], "test_acc": [0.5]}}
        parts.append(save([run], tmp_path / f"{k}.json", command=f"python -m tdlib.experiments curves --kernels {k}"))
    out = tmp_path / "joined.json"
    main(["merge", "--out", str(out)] + [str(p) for p in parts])
    doc = load(out)
    assert [r["kernel"] for r in doc["runs"]] == ["softmax", "gaussian"] and doc["provenance"]["wall_seconds"] == 3.0
    steps = doc["provenance"]["command"].split(" && ")
    assert steps[:2] == doc["parts"] and "--kernels gaussian" in steps[1]
    assert steps[2].startswith("python -m tdlib.experiments merge --out") and str(out) in steps[2]


# ------------------------------------------------------------------ statistics of the chapter
def _summary(final_by_kernel, steps=(0, 10, 20)):
    import numpy as np

    from tdlib import experiments as ex

    runs = []
    for k, finals in final_by_kernel.items():
        for s, f in enumerate(finals):
            runs.append({"kernel": k, "seed": s,
                         "curves": {"step": list(steps), "test_acc": [0.5, (0.5 + f) / 2, f]}})
    return ex.summarize(runs, "test_acc")


def test_verdict_and_reading():
    import pytest

    from tdlib import experiments as ex

    s = _summary({"gaussian": [0.8, 0.82, 0.85], "softmax": [0.7, 0.72, 0.75]})
    r = ex.seed_ranges(s)
    assert r["gaussian"] == (0.8, 0.85)
    assert ex.verdict(r["gaussian"], r["softmax"], "Gaussian", "Softmax") == \
        "every Gaussian seed ends above every Softmax seed"
    assert ex.verdict(r["softmax"], r["gaussian"], "Softmax", "Gaussian") == \
        "every Gaussian seed ends above every Softmax seed"
    assert "weak evidence" in ex.verdict_reading(r["gaussian"], r["softmax"], 3, 3)
    assert "0.10" in ex.verdict_reading(r["gaussian"], r["softmax"], 3, 3)
    s2 = _summary({"gaussian": [0.7, 0.8], "softmax": [0.75, 0.78]})
    r2 = ex.seed_ranges(s2)
    assert ex.verdict(r2["gaussian"], r2["softmax"], "G", "S") == "the ranges over seeds overlap"
    assert "not evidence" in ex.verdict_reading(r2["gaussian"], r2["softmax"], 2, 2)
    with pytest.raises(ValueError, match="range"):
        ex.verdict((0.9, 0.1), (0.1, 0.2), "a", "b")


def test_separation_chance_matches_permutations():
    import itertools

    import pytest

    from tdlib import experiments as ex

    # all orderings of 3 + 2 exchangeable values: count those where the first 3 beat the last 2
    hits = total = 0
    for perm in itertools.permutations(range(5)):
        total += 1
        hits += min(perm[:3]) > max(perm[3:])
    assert ex.separation_chance(3, 2) == pytest.approx(hits / total)
    assert ex.separation_chance(3, 3) == pytest.approx(1 / 20)
    with pytest.raises(ValueError, match="n_a"):
        ex.separation_chance(0, 3)


def test_accuracy_se_and_leave_chance():
    import pytest

    from tdlib import experiments as ex

    assert ex.accuracy_se(400) == pytest.approx(0.025)
    with pytest.raises(ValueError, match="n_test"):
        ex.accuracy_se(0)
    se = ex.accuracy_se(400)
    s = _summary({"gaussian": [0.9, 0.9], "softmax": [0.56, 0.7]})
    # gaussian: (0.5+0.9)/2 = 0.7 > 0.575 at step 10; softmax seed 0 leaves at step 20
    # (0.53 < 0.575, 0.56 < 0.575 -> never: counted as the last step 20), seed 1 at step 10
    leave = ex.leave_chance_steps(s, se)
    assert leave == {"gaussian": 10.0, "softmax": 15.0}
    with pytest.raises(ValueError, match="se"):
        ex.leave_chance_steps(s, 0.0)


def test_compare_kernels_reports_what_the_chapter_glues():
    import numpy as np
    import pytest

    from tdlib import experiments as ex

    runs = []
    finals = {"gaussian": [0.8, 0.82, 0.85], "softmax": [0.55, 0.7, 0.75]}
    for k, fs in finals.items():
        for s, f in enumerate(fs):
            acc = [0.5, 0.5 if k == "softmax" and s == 0 else f, f]
            runs.append({"kernel": k, "seed": s, "task": "text", "n_test": 400,
                         "curves": {"step": [0, 10, 20], "test_acc": acc,
                                    "test_loss": [0.7, 0.6, 1 - f]}})
    c = ex.compare_kernels(runs)
    se = ex.accuracy_se(400)
    assert c.se == pytest.approx(se) and c.final_step == 20
    g, sm = c.kernels["gaussian"], c.kernels["softmax"]
    assert g["acc"] == pytest.approx(np.mean(finals["gaussian"])) and (g["lo"], g["hi"]) == (0.8, 0.85)
    assert g["loss"] == pytest.approx(1 - np.mean(finals["gaussian"]))
    # 1/2 + 3 se = 0.575: softmax seed 0 ends at 0.55 and never gets there
    assert sm["first"] == [None, 10, 10] and sm["leave"] == pytest.approx((20 + 10 + 10) / 3)
    assert c.verdict == "every Gaussian seed ends above every Softmax seed"
    assert "weak evidence" in c.reading
    glued = c.glue_values()
    assert glued["softmax_leave"] == sm["leave"] and glued["verdict"] == c.verdict
    text = str(c)
    assert max(len(line) for line in text.splitlines()) <= ex.REPORT_WIDTH, text
    assert "never" in text and "0.800 to 0.850" in text
    with pytest.raises(ValueError, match="order"):
        ex.compare_kernels(runs, order=("gaussian", "linear"))
    runs[0]["n_test"] = 100
    with pytest.raises(ValueError, match="n_test"):
        ex.compare_kernels(runs)


def test_shell_lines_fit_and_paste_back():
    import shlex

    import pytest

    from tdlib import experiments as ex

    cmd = ("python -m tdlib.experiments curves --task pathfinder --image-size 16 --n-train 8000 "
           "--steps 2500 --kernels softmax --seeds 0 1 2 --out /tmp/a-very-long/path.json && "
           "python -m tdlib.experiments merge --out book/data/x.json /tmp/a.json")
    text = ex.shell_lines(cmd, width=60)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 60 and len(lines) > 3
    assert lines[-1].endswith("/tmp/a.json") and any(line.endswith(" &&") for line in lines)
    # the shell reads the same words: continuations join the lines back
    assert shlex.split(text.replace("\\\n", " ")) == shlex.split(cmd)
    with pytest.raises(ValueError, match="command"):
        ex.shell_lines("  ")


def test_leave_sentence_counts_seeds_and_names_steps():
    from tdlib import experiments as ex
    s = ex.leave_sentence({"softmax": [200, None, 300], "gaussian": [None, None, None]})
    assert s == ("2 of 3 Softmax seeds (first at step 200, 300) and 0 of 3 Gaussian seeds "
                 "leave chance within the budget")
    none = ex.leave_sentence({"softmax": [None], "gaussian": [None]})
    assert none == "no seed of either kernel leaves chance within the budget"
    with pytest.raises(ValueError, match="order: expected the kernels"):
        ex.leave_sentence({"softmax": [None]})

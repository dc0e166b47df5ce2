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
          "--seeds", "0", "--cache-dir", str(tmp_path), "--out", str(out), "--quiet",
          "--serial"])
    doc = json.loads(out.read_text())
    assert [r["kernel"] for r in doc["runs"]] == ["softmax", "gaussian"]
    assert doc["provenance"]["command"].startswith("python -m tdlib.experiments curves")
    with pytest.raises(SystemExit):
        main(["curves", "--task", "text", "--kernels", "nope", "--out", str(out)])
    assert "kernel" in capsys.readouterr().err


def test_merge_records_a_command_that_remakes_the_file(tmp_path):
    parts = []
    for k in ("softmax", "gaussian"):
        run = {"kernel": k, "seconds": 1.5, "curves": {"step": [0], "test_acc": [0.5],
                                                       "test_loss": [0.7]}}
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


def test_sign_flip_test_exact_p_values():
    import itertools

    from tdlib import experiments as ex

    # 3 seeds, all the same sign: only the observed pattern and its negation reach |mean|
    assert ex.sign_flip_test([0.02, 0.01, 0.03]) == 0.25 == ex.smallest_p(3)
    # 0.05, -0.01, 0.02: |sum| 0.06; signed sums +-0.06 and +-0.08 reach it, +-0.02 and
    # +-0.04 do not -> 4 of 8
    assert ex.sign_flip_test([0.05, -0.01, 0.02]) == 0.5
    # 4 seeds: 0.4, 0.3, 0.2, -0.1: |sum| 0.8 is reached by +-0.8 and +-1.0 only (checked
    # by brute force on integers)
    d = [4, 3, 2, -1]
    hits = sum(abs(sum(s * x for s, x in zip(signs, d))) >= abs(sum(d))
               for signs in itertools.product((1, -1), repeat=4))
    assert hits == 4 and ex.sign_flip_test([0.4, 0.3, 0.2, -0.1]) == 4 / 16
    assert ex.sign_flip_test([0.0, 0.0]) == 1.0
    assert ex.sign_flip_test([1.0] * 6) == ex.smallest_p(6) == 1 / 32
    with pytest.raises(ValueError, match="diffs"):
        ex.sign_flip_test([])
    with pytest.raises(ValueError, match="at most 20 seeds"):
        ex.sign_flip_test([1.0] * 21)


def test_paired_differences_and_verdict():
    from tdlib import experiments as ex

    s = _summary({"gaussian": [0.8, 0.7, 0.85], "softmax": [0.75, 0.72, 0.8]})
    d = ex.paired_differences(s, ("gaussian", "softmax"))
    assert d.tolist() == pytest.approx([0.05, -0.02, 0.05])
    # last 2 evaluations: (0.5+f)/2 and f -> mean (0.5 + 3f)/4, differences 3/4 of the final ones
    assert ex.paired_differences(s, last_k=2).tolist() == pytest.approx([0.0375, -0.015, 0.0375])
    p = ex.sign_flip_test(d)
    assert p == 0.5  # |sum| 0.08: reached by +-0.08 and +-0.12, not by +-0.02 (twice)
    v = ex.verdict(d, p, "Gaussian", "Softmax")
    assert v.startswith("Gaussian ends ahead of Softmax in 2 of 3 seeds, behind in 1")
    assert "+0.027" in v and "p = 0.50" in v
    assert "smallest p-value this test can give is 0.25" in ex.verdict_reading(p, 3)
    assert "evidence, at the 0.05 level" in ex.verdict_reading(1 / 32, 6)
    assert "not evidence" in ex.verdict_reading(0.5, 6)
    odd = _summary({"gaussian": [0.8, 0.7], "softmax": [0.75, 0.72, 0.8]})
    with pytest.raises(ValueError, match="same seeds"):
        ex.paired_differences(odd)
    with pytest.raises(ValueError, match="p-value"):
        ex.verdict(d, 0.0, "a", "b")


def test_leave_chance_is_measured_against_step_0_and_the_majority_class():
    from tdlib import experiments as ex

    assert ex.accuracy_se(400) == pytest.approx(0.025)
    with pytest.raises(ValueError, match="n_test"):
        ex.accuracy_se(0)
    runs = []
    for k, curves in {"gaussian": [[0.60, 0.62, 0.70], [0.50, 0.58, 0.60]],
                      "softmax": [[0.50, 0.60, 0.64], [0.52, 0.55, 0.58]]}.items():
        for s, acc in enumerate(curves):
            runs.append({"kernel": k, "seed": s, "curves": {"step": [0, 10, 20], "test_acc": acc}})
    s = ex.summarize(runs, "test_acc")
    assert ex.chance_levels(s, 0.55) == {"gaussian": [0.60, 0.55], "softmax": [0.55, 0.55]}
    # n_test 400: se at 0.60 is 0.0245, so 0.60 + 3 se = 0.673; at 0.55: 0.0249 -> 0.625
    first = ex.first_above_chance(s, 400, 0.55)
    assert first == {"gaussian": [20, None], "softmax": [20, None]}
    # against 1/2 (the old rule) the gaussian seed 0 would have "left" at step 0
    assert ex.leave_chance_steps(first, 20) == {"gaussian": 20.0, "softmax": 20.0}
    with pytest.raises(ValueError, match="majority"):
        ex.chance_levels(s, 0.0)


def test_compare_kernels_reports_what_the_chapter_glues():
    import numpy as np

    from tdlib import experiments as ex

    runs = []
    finals = {"gaussian": [0.8, 0.82, 0.85], "softmax": [0.55, 0.7, 0.75]}
    for k, fs in finals.items():
        for s, f in enumerate(fs):
            acc = [0.5, 0.5 if k == "softmax" and s == 0 else f, f]
            runs.append({"kernel": k, "seed": s, "task": "text", "n_test": 400,
                         "test_majority": 0.5,
                         "curves": {"step": [0, 10, 20], "test_acc": acc,
                                    "test_loss": [0.7, 0.6, 1 - f]}})
    c = ex.compare_kernels(runs, last_k=2)
    assert c.se == pytest.approx(ex.accuracy_se(400)) and c.final_step == 20 and c.majority == 0.5
    g, sm = c.kernels["gaussian"], c.kernels["softmax"]
    assert g["acc"] == pytest.approx(np.mean(finals["gaussian"])) and (g["lo"], g["hi"]) == (0.8, 0.85)
    assert g["loss"] == pytest.approx(1 - np.mean(finals["gaussian"]))
    # 1/2 + 3 se = 0.575: softmax seed 0 ends at 0.55 and never gets there
    assert sm["first"] == [None, 10, 10] and sm["leave"] == pytest.approx((20 + 10 + 10) / 3)
    assert sm["left"] == 2 and g["left"] == 3
    assert c.paired["diffs"] == pytest.approx([0.25, 0.12, 0.10]) and c.paired["p"] == 0.25
    assert c.paired["diffs_last"] == pytest.approx([0.275, 0.12, 0.10])
    assert c.verdict.startswith("Gaussian ends ahead of Softmax in 3 of 3 seeds")
    assert "0.25" in c.reading
    glued = c.glue_values()
    assert glued["softmax_leave"] == sm["leave"] and glued["verdict"] == c.verdict
    assert glued["paired_p"] == 0.25 and glued["min_p"] == 0.25
    text = str(c)
    assert max(len(line) for line in text.splitlines()) <= ex.REPORT_WIDTH, text
    assert "never" in text and "0.800 to 0.850" in text
    with pytest.raises(ValueError, match="order"):
        ex.compare_kernels(runs, order=("gaussian", "linear"))
    runs[0]["n_test"] = 100
    with pytest.raises(ValueError, match="n_test"):
        ex.compare_kernels(runs)


def test_step_size_choice_uses_the_validation_loss_only():
    from tdlib import experiments as ex

    def run(k, lr, val, test):
        return {"kernel": k, "config": {"lr": lr},
                "curves": {"val_loss": [0.7, val + 0.1, val], "val_acc": [0.5, 0.5, 0.6],
                           "test_loss": [0.7, 0.6, test]}}
    runs = [run("softmax", 1e-3, 0.60, 0.9), run("softmax", 3e-3, 0.65, 0.1),
            run("gaussian", 1e-3, 0.69, 0.5), run("gaussian", 3e-4, 0.62, 0.6)]
    choice = ex.choose_step_sizes(runs, last_k=2)
    assert choice["softmax"]["lr"] == 1e-3 and choice["gaussian"]["lr"] == 3e-4
    assert choice["softmax"]["val_loss"]["0.001"] == pytest.approx(0.65)
    with pytest.raises(ValueError, match="twice"):
        ex.choose_step_sizes(runs + [run("softmax", 1e-3, 0.5, 0.5)])
    with pytest.raises(ValueError, match="validation"):
        ex.choose_step_sizes([{"kernel": "softmax", "config": {"lr": 1.0},
                               "curves": {"test_loss": [1.0]}}])


def test_validation_split_is_carved_from_training(tmp_path):
    from tdlib import experiments as ex

    cfg = tiny_cfg(tmp_path, n_val=8, kernel="softmax")
    data = ex.load_data(cfg)
    split = ex.validation_split(data, 8)
    assert torch.equal(split["x_val"], data["x_train"][-8:]) and len(split["x_train"]) == 16
    assert torch.equal(split["x_test"], data["x_test"])
    _, r = train_model(cfg, progress=False)
    assert r["n_train"] == 16 and len(r["curves"]["val_acc"]) == 3
    assert len(r["init_scale"]["attention"]) == 1 and r["init_scale"]["residual"][0] > 0
    with pytest.raises(ValueError, match="n_val"):
        ex.validation_split(data, 24)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_cfg(tmp_path, n_val=20).resolved()


def test_attention_scale_measures_both_streams():
    from tdlib import experiments as ex

    m = Classifier(ModelConfig(max_len=10, D=8, hidden=8, H=2, layers=2), seed=0)
    x = torch.randint(1, 256, (3, 10))  # no padding token
    s = ex.attention_scale(m, x)
    Z = m.embed(x) + m.pos[:10]
    att = m.blocks[0].attn(m.blocks[0].ln1(Z))
    assert s["residual"][0] == pytest.approx(float(Z.pow(2).mean().sqrt()))
    assert s["attention"][0] == pytest.approx(float(att.pow(2).mean().sqrt()))
    assert len(s["attention"]) == 2 and m.training


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


def test_step_sizes_command_records_the_choice(tmp_path):
    out = tmp_path / "sweep.json"
    main(["step-sizes", "--task", "pathfinder", "--n-train", "24", "--n-val", "8", "--n-test",
          "8", "--steps", "2", "--eval-every", "1", "--batch-size", "4", "--D", "8", "--hidden",
          "8", "--layers", "1", "--lrs", "1e-3", "3e-3", "--last-k", "2", "--cache-dir",
          str(tmp_path), "--out", str(out), "--quiet"])
    doc = json.loads(out.read_text())
    assert len(doc["sweep"]) == 4 and set(doc["choice"]) == {"softmax", "gaussian"}
    assert doc["choice"]["softmax"]["lr"] in (1e-3, 3e-3) and doc["last_k"] == 2
    assert doc["provenance"]["command"].startswith("python -m tdlib.experiments step-sizes")
    with pytest.raises(SystemExit):
        main(["step-sizes", "--task", "pathfinder", "--lrs", "1e-3", "--out", str(out)])


def test_leave_sentence_counts_seeds_and_names_steps():
    from tdlib import experiments as ex
    s = ex.leave_sentence({"softmax": [200, None, 300], "gaussian": [None, None, None]})
    assert s == ("2 of 3 Softmax seeds (first at step 200, 300) and 0 of 3 Gaussian seeds "
                 "leave chance within the budget")
    none = ex.leave_sentence({"softmax": [None], "gaussian": [None]})
    assert none == "no seed of either kernel leaves chance within the budget"
    with pytest.raises(ValueError, match="order: expected the kernels"):
        ex.leave_sentence({"softmax": [None]})


def _comparison(left, leave, acc, se=0.016):
    from tdlib import experiments as ex

    kernels = {k: {"left": left[k], "leave": leave[k], "acc": acc[k]}
               for k in ("gaussian", "softmax")}
    return ex.KernelComparison(task="pathfinder", kernels=kernels, paired={}, se=se,
                               majority=0.5, verdict="", reading="", final_step=300, last_k=5)


def test_pathfinder_and_plateau_readings_branch_on_the_outcome():
    from tdlib import experiments as ex

    flat = _comparison({"gaussian": 0, "softmax": 0}, {"gaussian": 300, "softmax": 300},
                       {"gaussian": 0.5, "softmax": 0.51})
    assert ex.pathfinder_reading(flat, flat, 0.53).startswith("No run of either kernel")
    assert ex.plateau_reading(flat).startswith("No Pathfinder run")
    some = _comparison({"gaussian": 1, "softmax": 3}, {"gaussian": 250, "softmax": 100},
                       {"gaussian": 0.55, "softmax": 0.6})
    assert "do not show" in ex.pathfinder_reading(some, flat, 0.56)  # 0.6 < 0.56 + 3 se
    assert "uses the path structure" in ex.pathfinder_reading(some, flat, 0.52)
    assert ex.plateau_reading(some).startswith("The Gaussian Pathfinder runs leave chance later")
    early = _comparison({"gaussian": 3, "softmax": 3}, {"gaussian": 100, "softmax": 150},
                        {"gaussian": 0.6, "softmax": 0.6})
    assert "do not leave chance later" in ex.plateau_reading(early)


def test_merged_sweeps_choose_again(tmp_path):
    from tdlib import experiments as ex

    def doc(k, losses):
        runs = [{"kernel": k, "seconds": 1.0, "config": {"lr": lr},
                 "curves": {"val_loss": [0.7, v], "val_acc": [0.5, 0.5]}}
                for lr, v in losses.items()]
        return {"sweep": runs, "last_k": 1}
    merged = ex.merge_sweeps([doc("softmax", {1e-3: 0.6, 3e-3: 0.5}),
                              doc("gaussian", {1e-3: 0.4, 3e-4: 0.45})])
    assert merged["choice"]["softmax"]["lr"] == 3e-3 and merged["choice"]["gaussian"]["lr"] == 1e-3
    with pytest.raises(ValueError, match="last_k"):
        ex.merge_sweeps([doc("softmax", {1e-3: 0.6}), {**doc("gaussian", {1e-3: 0.4}),
                                                       "last_k": 2}])


def test_sweep_reading_says_whether_anything_moved():
    from tdlib import experiments as ex

    def run(k, lr, acc):  # the larger step size has the lower validation loss
        return {"kernel": k, "n_val": 400, "config": {"lr": lr},
                "curves": {"val_loss": [0.7, 0.69 - lr], "val_acc": [0.5, acc]}}
    runs = [run("softmax", 1e-3, 0.5), run("softmax", 3e-3, 0.51),
            run("gaussian", 1e-3, 0.5), run("gaussian", 3e-3, 0.5)]
    doc = {"sweep": runs, "choice": ex.choose_step_sizes(runs, 1)}
    text = ex.sweep_reading(doc)
    assert text.startswith("No step size lifted") and "largest step size" in text
    runs[1]["curves"]["val_acc"][-1] = 0.6  # 0.1 > 3 * 0.025
    assert ex.sweep_reading(doc).startswith("1 of 4 sweep runs lifted")

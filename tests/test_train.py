"""The weak-supervision trainer on tiny synthetic data (64 px discs, resnet18, a few steps)."""
import io
import threading

import numpy as np
import pytest
import torch

from conftest import make_disc_image
from segmenter import losses as L
from segmenter.data import (IGNORE, PSEUDO, Augmenter, Sample, TrainSet, boundary_band, resize_labels)
from segmenter.errors import CheckpointError, NoLabelsError, SegmenterError, TrainingStopped
from segmenter.models import ModelConfig, create_model, load_checkpoint, save_checkpoint
from segmenter.train import ProgressBar, TrainCallback, TrainConfig, Trainer

CLASSES = ["background", "disc"]


def disc_samples(n=6, kind="scribbles", start=0):
    out = []
    for k in range(start, start + n):
        img, gt, scr = make_disc_image(64, seed=k, rgb=k % 2 == 0)
        if kind == "scribbles":
            out.append(Sample(img, name=f"d{k}", scribbles=scr))
        elif kind == "full":
            out.append(Sample(img, name=f"d{k}", mask=gt))
        elif kind == "tags":
            out.append(Sample(img, name=f"d{k}", tags={0: "present", 1: "present"}))
        else:
            out.append(Sample(img, name=f"d{k}"))
    return out


def small(**kw):
    base = dict(epochs=2, batch_size=4, lr=2e-3, device="cpu", warmup_steps=2)
    base.update(kw)
    return TrainConfig(**base)


def mcfg(**kw):
    return ModelConfig(classes=CLASSES, size=64, **kw)


# ----------------------------------------------------------------------------- data

def test_resize_labels_keeps_thin_strokes_and_the_label_set():
    lab = np.full((256, 240), IGNORE, np.uint8)
    lab[100, 20:200] = 1   # a one-pixel stroke
    lab[30:32, 10:100] = 0
    lab[200, 50:60] = 2
    small_lab = resize_labels(lab, 64, sparse=True)
    assert set(np.unique(small_lab)) == {0, 1, 2, IGNORE}
    assert (small_lab == 1).sum() >= 40  # the stroke survives 4x shrinking as a line
    nearest = lab[::4, ::4]
    assert (small_lab != IGNORE).sum() > (nearest != IGNORE).sum()
    dense = np.zeros((50, 70), np.uint8)
    dense[10:40, 20:50] = 3
    out = resize_labels(dense, 32)
    assert set(np.unique(out)) == {0, 3}


@pytest.mark.parametrize("strength", ["light", "medium"])
def test_augmentation_keeps_labels_aligned_and_the_label_set(strength):
    img, gt, scr = make_disc_image(64, seed=3)
    aug = Augmenter(strength, seed=1)
    # an image that encodes its own label, to check alignment after the warp
    coded = np.repeat((gt * 200 + 20).astype(np.uint8)[..., None], 3, 2)
    weight = np.full_like(gt, 255)
    for _ in range(20):
        im, lab = aug(coded, np.stack([gt, weight, scr], -1))
        assert lab.shape == (64, 64, 3) and lab.dtype == np.uint8
        assert set(np.unique(lab[..., 0])) <= {0, 1, IGNORE}
        assert set(np.unique(lab[..., 2])) <= {0, 1, IGNORE}
        inside = (lab[..., 0] == 1) & (boundary_band(lab[..., 0], 2) == 0)
        outside = (lab[..., 0] == 0) & (boundary_band(lab[..., 0], 2) == 0)
        assert (im[..., 0][inside] > 110).mean() > 0.99
        assert (im[..., 0][outside] < 110).mean() > 0.99


def test_trainset_converts_mixed_sizes_and_channels():
    gray = np.random.default_rng(0).integers(0, 255, (50, 80), dtype=np.uint8)
    rgb = np.random.default_rng(1).integers(0, 255, (120, 90, 3), dtype=np.uint8)
    scr = np.full((50, 80), IGNORE, np.uint8)
    scr[10, 10:40] = 1
    d = TrainSet.build([Sample(gray, scribbles=scr), Sample(rgb)], 2, 64)
    assert d.images.shape == (2, 64, 64, 3) and d.images.dtype == np.uint8
    assert np.array_equal(d.images[0, ..., 0], d.images[0, ..., 2])  # gray replicated
    assert d.counts()["unlabeled"] == 1 and d.counts()["scribbles"] == 1
    assert d.tags[0, 1] == 1 and d.tags[0, 0] == -1


def test_trainset_refuses_bad_input():
    img, gt, scr = make_disc_image(64)
    with pytest.raises(NoLabelsError):
        TrainSet.build([Sample(img), Sample(img)], 2, 64)
    with pytest.raises(SegmenterError, match="at least two classes"):
        TrainSet.build([Sample(img, mask=np.zeros((64, 64), np.uint8))], 1, 64)
    with pytest.raises(SegmenterError, match="mask is 32x32"):
        TrainSet.build([Sample(img, mask=np.zeros((32, 32), np.uint8))], 2, 64)
    with pytest.raises(SegmenterError, match="class 5"):
        TrainSet.build([Sample(img, scribbles=np.full((64, 64), 5, np.uint8))], 2, 64)
    with pytest.raises(SegmenterError, match="mask kind"):
        Sample(img, mask=gt, mask_kind="guess")


def test_coarse_masks_ignore_their_boundary_band_and_pseudo_masks_carry_confidence():
    img, gt, _ = make_disc_image(64)
    conf = np.full((64, 64), 0.5, np.float32)
    d = TrainSet.build([Sample(img, mask=gt, mask_kind="coarse"), Sample(img, mask=gt, mask_kind="pseudo", confidence=conf),
                        Sample(img, mask=gt)], 2, 64, coarse_band=2, coarse_band_weight=0.0)
    band = boundary_band(d.dense[0], 2)
    assert (d.weight[0][band] == 0).all() and (d.weight[0][~band] == 255).all()
    assert (d.weight[1] == 128).all()
    assert (d.weight[2] == 255).all()
    assert list(d.tags[2]) == [1, 1]  # a full mask without ignore tells which classes are present


# ----------------------------------------------------------------------------- models and checkpoints

def test_registries_fail_helpfully():
    with pytest.raises(SegmenterError, match="unet"):
        create_model(ModelConfig(classes=CLASSES, arch="not-an-arch"))
    with pytest.raises(SegmenterError, match="resnet18"):
        create_model(ModelConfig(classes=CLASSES, encoder="not-an-encoder"))
    with pytest.raises(SegmenterError, match="multiple of 32"):
        ModelConfig(classes=CLASSES, size=100)
    with pytest.raises(SegmenterError, match="semi"):
        TrainConfig(semi="magic")


def test_checkpoint_roundtrip_class_check_and_corruption(tmp_path):
    cfg = mcfg()
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    path = save_checkpoint(tmp_path / "m", model, cfg, state={"epoch": 3})
    assert path.suffix == ".safetensors" and (tmp_path / "m.json").is_file()
    ck = load_checkpoint(path, expected_classes=CLASSES)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], ck.model(x)[0])
    assert ck.state["epoch"] == 3 and ck.config.version.startswith("m-")
    with pytest.raises(CheckpointError, match="trained for classes"):
        load_checkpoint(path, expected_classes=["background", "cat"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing")


def test_pretrained_encoder_weights_from_a_local_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    cfg = mcfg()
    torch.manual_seed(1)
    donor = create_model(cfg)
    save_file({k: v.contiguous() for k, v in donor.encoder.state_dict().items()}, str(tmp_path / "enc.safetensors"))
    torch.manual_seed(2)
    model = create_model(cfg, encoder_weights=tmp_path / "enc.safetensors")
    k = "conv1.weight"
    assert torch.equal(model.encoder.state_dict()[k], donor.encoder.state_dict()[k])
    (tmp_path / "enc.pth").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="never loaded"):
        create_model(cfg, encoder_weights=tmp_path / "enc.pth")
    # the training config refuses a bad file at once, before labels are built
    with pytest.raises(CheckpointError, match="never loaded"):
        TrainConfig(encoder_weights=str(tmp_path / "enc.pth"))
    with pytest.raises(CheckpointError, match="not found"):
        TrainConfig(encoder_weights=str(tmp_path / "gone.safetensors"))


# ----------------------------------------------------------------------------- training

class Recorder(TrainCallback):
    def __init__(self):
        self.steps, self.epochs, self.ended, self.rounds, self.info = [], [], None, [], {}

    def on_start(self, info):
        self.info = info

    def on_step(self, p):
        self.steps.append(p)

    def on_epoch_end(self, p, metrics):
        self.epochs.append(metrics)

    def on_round_end(self, i, changed):
        self.rounds.append(changed)

    def on_end(self, result):
        self.ended = result


def test_mixed_supervision_run_with_refinement_checkpoint_and_resume(tmp_path):
    samples = (disc_samples(4, "scribbles") + disc_samples(2, "full", start=4) + disc_samples(2, "tags", start=6)
               + disc_samples(2, "none", start=8))
    data = TrainSet.build(samples, 2, 64)
    rec = Recorder()
    ck = tmp_path / "run"
    cfg = small(epochs=2, rounds=2, refine_after=0.5, checkpoint=str(ck), semi="mean_teacher")
    res = Trainer(data, mcfg(), cfg, callbacks=[rec]).fit()
    assert res.epochs_done == 2 and res.steps == 6 and res.images_seen == 2 * 10
    # every loss term took part: full/pseudo (dense), scribbles, CRF, tags, absent, mean teacher
    assert {"dense", "dice", "scribble", "crf", "tag", "absent", "unlabeled"} <= set(res.history[0])
    assert len(rec.steps) == 6 and rec.steps[-1].eta_s == pytest.approx(0.0, abs=1e-6)
    assert all(np.isfinite(s.loss) and s.images_per_s > 0 for s in rec.steps)
    # one refinement after epoch 1: scribbled images now hold pseudo-masks that keep every stroke
    assert len(res.rounds) == 1 and len(rec.rounds) == 1
    for i in range(4):
        assert data.kind[i] & PSEUDO
        hard = data.scribbles[i] != IGNORE
        assert np.array_equal(data.dense[i][hard], data.scribbles[i][hard])
    loaded = load_checkpoint(ck, expected_classes=CLASSES)
    assert loaded.state["epoch"] == 2 and loaded.teacher_state() is not None
    # resume to 3 epochs: continues from epoch 2 with the optimiser state
    res2 = Trainer(data, mcfg(), small(epochs=3, rounds=2, checkpoint=str(ck), resume=str(ck),
                                       semi="mean_teacher")).fit()
    assert res2.epochs_done == 3 and res2.steps == 9 and res2.images_seen == 10
    assert load_checkpoint(ck).state["epoch"] == 3


def test_training_reduces_the_loss_on_full_masks():
    data = TrainSet.build(disc_samples(8, "full"), 2, 64)
    res = Trainer(data, mcfg(aux_head=False), small(epochs=4, lr=3e-3)).fit()
    first, last = res.history[0]["loss"], res.history[-1]["loss"]
    assert last < first * 0.7


@pytest.mark.parametrize("n", [1, 3])
def test_a_batch_of_one_image_trains_deeplabv3plus(n):
    """DeepLabV3+ pools to 1x1 before a batch norm, which refuses a batch of one image: a project
    of one image, or 3 at batch size 2, crashed with a ValueError."""
    data = TrainSet.build(disc_samples(n, "full"), 2, 64)
    res = Trainer(data, mcfg(arch="deeplabv3plus", aux_head=False), small(epochs=1, batch_size=2)).fit()
    assert res.epochs_done == 1 and np.isfinite(res.history[-1]["loss"])


def test_cancel_stops_cleanly_and_keeps_the_last_checkpoint(tmp_path):
    data = TrainSet.build(disc_samples(8), 2, 64)
    stop = threading.Event()

    ck = tmp_path / "c"
    marks = []

    class CancelInEpoch2(TrainCallback):
        def on_step(self, p):
            marks.append((tmp_path / ".training-c.lock").is_file())  # "under way", for another training
            if p.epoch == 1:
                stop.set()

    res = Trainer(data, mcfg(), small(epochs=4, checkpoint=str(ck)), callbacks=[CancelInEpoch2()], cancel=stop).fit()
    assert res.stopped == "cancelled" and "last good checkpoint" in res.message
    assert marks and all(marks) and not (tmp_path / ".training-c.lock").exists()  # gone once it stopped
    assert res.epochs_done == 1 and res.steps == 3
    assert load_checkpoint(ck).state["epoch"] == 1


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    data = TrainSet.build(disc_samples(8), 2, 64)
    real = L.weighted_ce
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] > 8 else out  # 2 calls per step: NaN in step 5 (epoch 3)

    monkeypatch.setattr(L, "weighted_ce", flaky)
    ck = tmp_path / "n"
    with pytest.raises(TrainingStopped, match="NaN"):
        Trainer(data, mcfg(), small(epochs=4, checkpoint=str(ck), rounds=1)).fit()
    kept = load_checkpoint(ck)
    assert kept.state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in kept.model.state_dict().values() if v.is_floating_point())


def test_scribbles_are_propagated_into_pseudo_masks_before_training():
    """Round 0: each scribbled image gets a confidence-weighted pseudo-mask from segmenter.pseudo
    (strokes kept), so the dense losses see the whole disc, not only the strokes."""
    samples = disc_samples(4, "scribbles")
    gts = [resize_labels(make_disc_image(64, seed=k, rgb=k % 2 == 0)[1], 64) for k in range(4)]
    data = TrainSet.build(samples, 2, 64)
    assert not (data.kind & PSEUDO).any() and (data.dense == IGNORE).all()
    rec = Recorder()
    Trainer(data, mcfg(), small(epochs=1, rounds=1), callbacks=[rec]).fit()
    assert rec.info["propagated"] == 4
    for i in range(4):
        assert data.kind[i] & PSEUDO
        hard = data.scribbles[i] != IGNORE
        assert np.array_equal(data.dense[i][hard], data.scribbles[i][hard])
        assert (data.dense[i] == gts[i]).mean() > 0.9
        assert data.weight[i][hard].min() == 255 and data.weight[i].mean() > 100

    off = TrainSet.build(disc_samples(2, "scribbles"), 2, 64)
    Trainer(off, mcfg(), small(epochs=1, rounds=1, propagate="none")).fit()
    assert not (off.kind & PSEUDO).any()
    with pytest.raises(SegmenterError, match="unknown pseudo-labelling method 'nope'"):
        small(propagate="nope")


def test_refinement_can_rerun_the_pseudo_method_with_the_model_as_prior(monkeypatch):
    """... and both steps take the project's background class (an "object,background" project's
    strokes were propagated with class 0 as the background; bug hunt 48, #4)."""
    from segmenter import pseudo

    calls, backgrounds = [], []
    real = pseudo.get_method

    def spy(name=None, **kw):
        m = real(name, **kw)

        def call(image, scribbles, C, prior=None, background=0):
            calls.append(prior is not None)
            backgrounds.append(background)
            return m(image, scribbles, C, prior=prior, background=background)
        return call
    monkeypatch.setattr(pseudo, "get_method", spy)
    data = TrainSet.build(disc_samples(4, "scribbles"), 2, 64)
    res = Trainer(data, mcfg(), small(epochs=2, rounds=2, refine="pseudo", background=1)).fit()
    assert len(res.rounds) == 1
    assert calls == [False] * 4 + [True] * 4  # propagation, then the rerun with the model's probabilities
    assert backgrounds == [1] * 8
    for i in range(4):
        hard = data.scribbles[i] != IGNORE
        assert np.array_equal(data.dense[i][hard], data.scribbles[i][hard])
    with pytest.raises(SegmenterError, match="cannot be used with propagate=none"):
        small(refine="pseudo", propagate="none")


def test_refinement_prior_keeps_the_previous_pseudo_mask_in_play():
    """The rerun's prior is model x previous pseudo-mask: the previous labels as probabilities
    (their confidence on their class, the rest shared; uniform where unlabelled)."""
    data = TrainSet.build(disc_samples(1, "scribbles"), 2, 64)
    data.dense[0] = 1
    data.dense[0, :4] = 0
    data.dense[0, -4:] = IGNORE
    data.weight[0] = 204  # confidence 0.8
    p = Trainer(data, mcfg(), small())._previous_probs(0)
    assert p.shape == (2, 64, 64) and p.dtype == np.float32
    assert np.allclose(p.sum(0), 1.0)
    assert np.allclose(p[1, 10:50], 0.8) and np.allclose(p[0, :4], 0.8) and np.allclose(p[:, -4:], 0.5)


def test_confidence_power_sharpens_pseudo_label_weights():
    data = TrainSet.build(disc_samples(1, "scribbles"), 2, 64)
    conf = np.full((64, 64), 0.8, np.float32)
    tr = Trainer(data, mcfg(), small(confidence_power=2.0, pseudo_weight=1.0))
    tr._set_pseudo(0, np.ones((64, 64), np.uint8), conf)
    assert data.kind[0] & PSEUDO and (data.dense[0] == 1).all()
    assert np.all(data.weight[0] == round(0.64 * 255))
    assert np.allclose(tr._previous_probs(0)[1], 0.8, atol=0.01)  # the power is undone for the prior
    with pytest.raises(SegmenterError, match="confidence_power"):
        small(confidence_power=-1)


def test_refinement_mixes_the_pseudo_rerun_and_the_crf_step_in_one_batch(monkeypatch):
    """Scribbled images rerun the pseudo method; a pseudo-mask-only image (no strokes) gets the CRF step."""
    img, gt, _ = make_disc_image(64, seed=9, rgb=True)
    samples = disc_samples(3, "scribbles") + [Sample(img, name="p", mask=gt, mask_kind="pseudo")]
    data = TrainSet.build(samples, 2, 64)
    crf_batches = []
    real_crf = L.crf_refine

    def spy(probs, *a, **k):
        crf_batches.append(probs.shape[0])
        return real_crf(probs, *a, **k)

    monkeypatch.setattr(L, "crf_refine", spy)
    res = Trainer(data, mcfg(), small(epochs=2, rounds=2)).fit()
    assert crf_batches == [1]  # the three scribbled images took the pseudo rerun, not the CRF step
    assert len(res.rounds) == 1 and (data.kind & PSEUDO).all()
    # the stroke-less image got exactly the CRF step that an all-CRF refinement gives it
    crf = TrainSet.build(samples, 2, 64)
    Trainer(crf, mcfg(), small(epochs=2, rounds=2, refine="crf")).fit()
    assert (data.dense[3] != IGNORE).all() and (data.dense[3] == crf.dense[3]).mean() > 0.99
    for i in range(3):
        hard = data.scribbles[i] != IGNORE
        assert np.array_equal(data.dense[i][hard], data.scribbles[i][hard])


def test_self_training_labels_the_unlabeled_images_at_refinement_points():
    """Default semi-supervised mode: the EMA teacher labels the unlabeled images between rounds;
    only its confident pixels are kept, weighted by confidence, and they are mostly right. With
    ``semi="none"`` the unlabeled images stay without labels."""
    def run(semi):
        samples = disc_samples(6, "full") + disc_samples(4, "none", start=6)
        data = TrainSet.build(samples, 2, 64)
        res = Trainer(data, mcfg(), small(epochs=6, rounds=2, refine_after=0.5, lr=3e-3, semi=semi,
                                          unlabeled_threshold=0.6)).fit()
        return data, res

    data, res = run("self_training")
    assert TrainConfig().semi == "self_training"
    bar = io.StringIO()
    ProgressBar(bar).on_epoch_end(None, res.history[2])
    assert "self-training after epoch 3: the teacher labelled" in bar.getvalue()
    kept = [h["unlabeled_kept"] for h in res.history if "unlabeled_kept" in h]
    assert len(kept) == 1 and kept[0] > 0.5                        # one refinement point (after epoch 3)
    assert "unlabeled" not in res.history[0]                      # no per-step teacher pass
    gts = [make_disc_image(64, seed=k, rgb=k % 2 == 0)[1] for k in range(6, 10)]
    for i, gt in zip(range(6, 10), gts):
        has = data.dense[i] != IGNORE
        assert has.any() and (data.weight[i][has] >= round(0.6 * 255)).all() and (data.weight[i][~has] == 0).all()
        assert (data.dense[i][has] == gt[has]).mean() > 0.9
    assert data.counts()["unlabeled"] == 4                          # still counted as unlabeled images
    data0, res0 = run("none")
    assert (data0.dense[6:] == IGNORE).all() and not any("unlabeled_kept" in h for h in res0.history)


def test_crf_loss_only_on_images_without_a_dense_label(monkeypatch):
    """Once scribbles are propagated into pseudo-masks the gated CRF loss is off for those images
    (it pulls against the dense labels); it stays on for images with no dense label (unlabeled,
    tags), and on the strokes when propagation is off."""
    seen = []
    real = L.gated_crf_loss

    def spy(probs, x01, *a, image_weight=None, **k):
        seen.append(image_weight.detach().cpu().numpy().copy())
        return real(probs, x01, *a, image_weight=image_weight, **k)

    monkeypatch.setattr(L, "gated_crf_loss", spy)

    def weights(propagate, extra):
        seen.clear()
        samples = disc_samples(4, "scribbles") + extra
        data = TrainSet.build(samples, 2, 64)
        Trainer(data, mcfg(), small(epochs=1, batch_size=len(samples), rounds=1, propagate=propagate,
                                    semi="none")).fit()
        return seen

    w = weights("hybrid", disc_samples(2, "none", start=4) + disc_samples(2, "tags", start=6))
    # one step, the whole set in one (shuffled) batch: 4 propagated images off, 4 sparse ones on
    assert len(w) == 1 and sorted(w[0].tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert weights("none", [])[0].tolist() == [1, 1, 1, 1]
    assert weights("hybrid", []) == []        # nothing sparse in the batch: the term is not computed


def test_self_labelled_unlabeled_images_leave_the_crf_loss(monkeypatch):
    seen = []
    real = L.gated_crf_loss

    def spy(probs, x01, *a, image_weight=None, **k):
        seen.append(sorted(image_weight.detach().cpu().numpy().tolist()))
        return real(probs, x01, *a, image_weight=image_weight, **k)

    monkeypatch.setattr(L, "gated_crf_loss", spy)
    samples = disc_samples(2, "full") + disc_samples(2, "tags", start=2) + disc_samples(2, "none", start=4)
    data = TrainSet.build(samples, 2, 64)
    Trainer(data, mcfg(), small(epochs=2, batch_size=6, rounds=2, refine_after=0.5, semi="self_training",
                                unlabeled_threshold=0.0)).fit()
    # epoch 1: tags + unlabeled images are sparse; after the self-training labels, only the tagged ones
    assert seen == [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]]


def test_crf_refinement_also_keeps_the_previous_pseudo_mask_in_play(monkeypatch):
    """Stroke-less pseudo-masks (tags, stored pseudo-masks) are refined by the CRF step from the
    model's probabilities times the previous mask's, as the pseudo rerun is: a weak model cannot
    overwrite good labels. ``refine_keep_previous=False`` gives the CRF the model alone."""
    img, gt, _ = make_disc_image(64, seed=9, rgb=True)
    conf = np.full((64, 64), 0.9, np.float32)
    samples = [Sample(img, name="p", mask=gt, mask_kind="pseudo", confidence=conf)] + disc_samples(2, "full", start=1)
    got = {}
    real_crf, real_predict = L.crf_refine, Trainer._predict

    def crf_spy(probs, *a, **k):
        got["crf_in"] = probs.detach().clone()
        return real_crf(probs, *a, **k)

    def predict_spy(self, model, idx):
        x01, probs = real_predict(self, model, idx)
        got["model"] = probs.detach().clone()
        return x01, probs

    monkeypatch.setattr(L, "crf_refine", crf_spy)
    monkeypatch.setattr(Trainer, "_predict", predict_spy)
    for keep in (True, False):
        data = TrainSet.build(samples, 2, 64)
        tr = Trainer(data, mcfg(), small(epochs=2, rounds=2, refine_keep_previous=keep))
        prev = tr._previous_probs(0)
        tr.fit()
        model = got["model"][0].numpy()
        want = model * prev / (model * prev).sum(0, keepdims=True) if keep else model
        assert np.allclose(got["crf_in"][0].numpy(), want, atol=1e-5)


def test_refinement_starts_early_for_stroke_less_pseudo_masks_unless_told():
    """``refine_after=None`` (the default): tag / stored pseudo-masks (no strokes) are refined after
    a fifth of the epochs, scribble propagations after half; an explicit share always wins."""
    pseudo = []
    for k in range(4):
        img, gt, _ = make_disc_image(64, seed=k)
        pseudo.append(Sample(img, name=f"p{k}", mask=gt, mask_kind="pseudo",
                             confidence=np.full(gt.shape, 0.8, np.float32), tags={0: "present", 1: "present"}))
    tagged = TrainSet.build(pseudo, 2, 64)
    scribbled = TrainSet.build(disc_samples(4), 2, 64)
    assert TrainConfig().refine_after is None
    assert Trainer(tagged, mcfg(), small(epochs=10))._refine_epochs() == [2, 6]
    assert Trainer(scribbled, mcfg(), small(epochs=10))._refine_epochs() == [5, 8]
    assert Trainer(tagged, mcfg(), small(epochs=10, refine_after=0.5))._refine_epochs() == [5, 8]
    assert Trainer(tagged, mcfg(), small(epochs=2, rounds=2))._refine_epochs() == [1]  # never before epoch 1
    # one stroke anywhere among the weak images: the scribble schedule
    mixed = TrainSet.build(pseudo[:3] + disc_samples(1), 2, 64)
    assert Trainer(mixed, mcfg(), small(epochs=10))._refine_epochs() == [5, 8]
    bar = io.StringIO()
    res = Trainer(tagged, mcfg(), small(epochs=3, rounds=2), callbacks=[ProgressBar(bar)]).fit()
    assert res.refine_at == [1] and len(res.rounds) == 1
    assert "training on 4 images" in bar.getvalue() and "; refinement after epoch 1\n" in bar.getvalue()
    with pytest.raises(SegmenterError, match="refine_after"):
        TrainConfig(refine_after=1.5)


def test_one_channel_training_propagates_the_strokes():
    """``--channels 1`` caches (S, S, 1) images; the pseudo-labellers take (S, S) or (S, S, 3), and
    every project with strokes failed ('the image must be (H, W) or (H, W, 3)')."""
    data = TrainSet.build(disc_samples(3), 2, 64, channels=1)
    res = Trainer(data, mcfg(in_channels=1, aux_head=False), small(epochs=1, batch_size=3)).fit()
    assert res.epochs_done == 1 and (data.kind & PSEUDO).all()


def test_the_run_summary_counts_each_image_once_and_the_progress_shows_the_mean_loss_of_labelled_steps():
    """Bug hunt 22 (6c, 6d): 'training on 20 images (5 pseudo, 5 scribbles, 15 unlabeled)' counted
    the scribbled images twice (their pseudo-masks); and the progress showed the last batch's loss,
    0.0000 when that batch held unlabeled images only. Now each image is counted once, and the loss
    shown is the mean over the epoch's labelled steps so far."""
    samples = disc_samples(2, "scribbles") + disc_samples(4, "none", start=2)
    data = TrainSet.build(samples, 2, 64)

    def batches(seed):  # the trainer's order of epoch 0, in batches of 2
        order = list(np.random.default_rng(seed).permutation(6))
        return [set(order[k:k + 2]) for k in (0, 2, 4)]

    # a seed whose last batch holds unlabeled images alone, each earlier batch one scribbled image
    seed = next(s for s in range(200) if batches(s)[2] <= {2, 3, 4, 5} and all(b & {0, 1} for b in batches(s)[:2]))
    bar, rec = io.StringIO(), Recorder()
    Trainer(data, mcfg(aux_head=False), small(epochs=1, batch_size=2, rounds=1, seed=seed),
            callbacks=[ProgressBar(bar), rec]).fit()
    assert bar.getvalue().startswith("training on 6 images (2 with strokes (pseudo-masks from them), 4 unlabeled) "), \
        bar.getvalue()
    first, second, last = rec.steps
    assert last.loss > 0.05 and last.loss == pytest.approx(second.loss)  # the unlabeled batch changes nothing
    assert set(last.losses) == set(first.losses) and last.losses["dense"] == pytest.approx(second.losses["dense"])
    # Every image in one group, whatever labels it combines.
    from segmenter.data import COARSE, FULL, SCRIBBLES, TAGS
    from segmenter.train import label_groups

    kind = np.array([FULL | SCRIBBLES, COARSE | TAGS, SCRIBBLES | PSEUDO, SCRIBBLES, PSEUDO | TAGS, TAGS, 0, 0],
                    np.uint8)
    groups = label_groups(kind)
    assert sum(n for n, _ in groups) == len(kind)
    assert groups == [(1, "with full masks"), (1, "with coarse masks"),
                      (2, "with strokes (1 with pseudo-masks from them)"), (1, "with pseudo-masks"),
                      (1, "with tags only"), (2, "unlabeled")]

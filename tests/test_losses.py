"""Losses of the weak-supervision trainer, on tiny tensors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segmenter import losses as L


def _img_and_gt(disc):
    img, gt, scr = disc
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    return x, torch.from_numpy(gt).long()[None], torch.from_numpy(scr).long()[None]


def test_weighted_ce_is_ce_on_labelled_pixels_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, :4] = 255
    ref = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(L.weighted_ce(logits, target), ref, atol=1e-6)
    # weights scale each pixel; normalised by the labelled count, so weight 0.5 halves the loss
    w = torch.full((2, 8, 8), 0.5)
    assert torch.allclose(L.weighted_ce(logits, target, w), ref * 0.5, atol=1e-6)


def test_weighted_ce_without_labels_is_zero_with_gradient():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = L.weighted_ce(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_gated_crf_loss_prefers_segmentation_that_follows_the_image(disc):
    x, gt, _ = _img_and_gt(disc)
    good = F.one_hot(gt, 2).permute(0, 3, 1, 2).float()
    shifted = torch.roll(good, shifts=7, dims=3)  # boundary no longer on the image edge
    noisy = torch.softmax(torch.randn(1, 2, 64, 64) * 3, 1)
    lg = L.gated_crf_loss(good, x)
    assert lg < L.gated_crf_loss(shifted, x)
    assert lg < L.gated_crf_loss(noisy, x)
    # an image weight of 0 switches it off
    assert float(L.gated_crf_loss(noisy, x, image_weight=torch.zeros(1))) == 0.0


def test_crf_refine_keeps_scribbles_and_cleans_noise(disc):
    x, gt, scr = _img_and_gt(disc)
    torch.manual_seed(0)
    clean = F.one_hot(gt, 2).permute(0, 3, 1, 2).float()
    noisy = torch.softmax(torch.log(clean * 0.6 + 0.2) + torch.randn(1, 2, 64, 64) * 1.5, 1)
    q = L.crf_refine(noisy, x, scr, iterations=5)
    assert torch.allclose(q.sum(1), torch.ones(1, 64, 64), atol=1e-4)
    lab = q.argmax(1)
    hard = scr != 255
    assert torch.equal(lab[hard], scr[hard])
    err_before = (noisy.argmax(1) != gt).float().mean()
    err_after = (lab != gt).float().mean()
    assert err_after < err_before * 0.5


def test_tag_loss_skips_unknown_and_absent_loss_and_suppression():
    logits = torch.tensor([[5.0, -5.0, 0.0]])
    tags = torch.tensor([[1, 0, -1]])
    assert float(L.tag_loss(logits, tags)) < 0.01
    assert float(L.tag_loss(-logits, tags)) > 4
    assert float(L.tag_loss(logits, torch.full((1, 3), -1))) == 0.0
    probs = torch.zeros(1, 3, 2, 2)
    probs[:, 1] = 1.0
    assert float(L.absent_loss(probs, tags)) == pytest.approx(1.0)
    pix = torch.zeros(1, 3, 2, 2)
    pix[:, 1] = 10.0
    out = L.suppress_absent(pix, tags)
    assert out.argmax(1).ne(1).all()
    # every class tagged absent: nothing is suppressed (an image needs some class)
    assert torch.equal(L.suppress_absent(pix, torch.zeros(1, 3, dtype=torch.long)), pix)


def test_confident_pseudo_ce_uses_only_confident_teacher_pixels():
    student = torch.zeros(1, 2, 1, 2)
    teacher = torch.tensor([[[[0.99, 0.6]], [[0.01, 0.4]]]])
    full = float(L.confident_pseudo_ce(student, teacher, threshold=0.5))
    half = float(L.confident_pseudo_ce(student, teacher, threshold=0.9))
    assert half == pytest.approx(full / 2, rel=1e-5)
    assert float(L.confident_pseudo_ce(student, teacher, threshold=0.999)) == 0.0
    assert np.isfinite(full)


def test_weighted_dice_rewards_small_classes_and_skips_unlabelled():
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[0, :2, :2] = 1  # a tiny class
    perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float()
    all_bg = torch.zeros(1, 2, 16, 16)
    all_bg[:, 0] = 1
    assert float(L.weighted_dice(perfect, target)) < 1e-3
    # missing the tiny class costs about half the Dice loss, though it is 1.6% of the pixels
    assert float(L.weighted_dice(all_bg, target)) > 0.4
    ignored = target.clone()
    ignored[0, :2, :2] = 255
    assert float(L.weighted_dice(all_bg, ignored)) < 1e-3
    assert float(L.weighted_dice(all_bg, torch.full_like(target, 255))) == 0.0

"""Each network's own view of the unlabeled patches: labeled patches kept, flips undone, the step still learns."""
import torch

from napari_dmd.config import TrainConfig
from napari_dmd.data import Volume
from napari_dmd.training import Trainer
from napari_dmd.views import View, network_views, own_view


def batch(n_lab=2, n_unl=2, shape=(8, 12, 10)):
    torch.manual_seed(0)
    return torch.randn(n_lab + n_unl, 1, *shape)


def test_same_views_are_the_batch_itself():
    image = batch()
    views = network_views(image, 2, 2, "same")
    assert len(views) == 2 and all(v.image is image and v.back(image) is image for v in views)


def test_own_views_keep_the_labeled_patches_and_perturb_each_unlabeled_one_apart():
    image = batch()
    before = image.clone()
    torch.manual_seed(1)
    a, b = network_views(image, 2, 2, "own")
    assert torch.equal(image, before)  # the batch is kept
    for view in (a, b):
        assert view.image.shape == image.shape
        assert torch.equal(view.image[:2], image[:2])
        assert not torch.allclose(view.back(view.image)[2:], image[2:], atol=1e-3)
    assert not torch.allclose(a.image[2:], b.image[2:])


def test_back_undoes_the_flips_of_the_unlabeled_patches_only():
    image = batch()
    for flips in ((), (-1,), (-2,), (-2, -1)):
        seen = torch.cat([image[:2], image[2:].flip(flips)]) if flips else image
        assert torch.equal(View(seen, 2, flips).back(seen), image)


def test_a_view_of_the_unlabeled_patches_stays_close_to_them_once_flipped_back():
    image = batch(0, 4, (16, 16, 16))
    torch.manual_seed(2)
    view = own_view(image, 0)
    back = view.back(view.image)
    for k in range(4):
        r = torch.corrcoef(torch.stack([back[k].flatten(), image[k].flatten()]))[0, 1]
        assert r > 0.5  # brightness, contrast and noise in the augmentation's ranges: the same anatomy


def test_a_batch_without_unlabeled_patches_is_its_own_view():
    image = batch(2, 0)
    view = own_view(image, 2)
    assert view.image is image and view.flips == ()


def test_a_step_with_own_views_updates_both_networks_from_other_inputs(tiny_cases):
    lab = [Volume.create(img, lab) for img, lab in tiny_cases[:1]]
    unl = [Volume.create(img) for img, _ in tiny_cases[1:2]]
    cfg = TrainConfig(iterations=1, patch_size=(16, 16, 16), labeled_batch=1, unlabeled_batch=1, lambda_rampup=0,
                      unlabeled_views="own", precision="fp32")
    t = Trainer(lab, unl, cfg)
    before = [p.detach().clone() for net in t.model.nets for p in net.parameters()]
    step = t.step(0)
    after = [p.detach() for net in t.model.nets for p in net.parameters()]
    assert not step.problem and step.distill_loss > 0
    half = len(before) // 2
    assert any(not torch.equal(x, y) for x, y in zip(before[:half], after[:half]))
    assert any(not torch.equal(x, y) for x, y in zip(before[half:], after[half:]))
    same = Trainer(lab, unl, TrainConfig(**{**cfg.to_dict(), "unlabeled_views": "same"})).step(0)
    assert same.distill_loss != step.distill_loss  # the same networks and batch: the networks saw their own views

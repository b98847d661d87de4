"""The low-label options together (copy-paste, augmentations, reviewed-aware sampling, pseudo-labels, cross entropy)
in a short fp32 run."""
import numpy as np

from napari_dmd.config import TrainConfig
from napari_dmd.data import Volume
from napari_dmd.inference import predict
from napari_dmd.metrics import evaluate_case
from napari_dmd.review import Reviewed
from napari_dmd.training import Trainer

from synthetic import make_case

OPTIONS = dict(mix_probability=1.0, mix_ratio=0.5, augment_spatial=0.5, augment_intensity=0.3,
               labeled_sampling="reviewed", pseudo_weight=1.0, ce_weight=1.0)


def test_a_short_run_with_every_option_is_finite_and_learns():
    cases = [make_case(s) for s in range(4)]
    partial = Reviewed(cases[1][1].shape, slices={6, 9}).mask()
    labeled = [Volume.create(*cases[0]), Volume.create(*cases[1], mask=partial)]
    unlabeled = [Volume.create(img) for img, _ in cases[2:]]
    cfg = TrainConfig(iterations=16, patch_size=(16, 16, 16), precision="fp32", lambda_rampup=0, **OPTIONS)
    trainer = Trainer(labeled, unlabeled, cfg)
    mixed = []
    real = trainer._mixes
    trainer._mixes = lambda it: mixed.append(real(it)) or mixed[-1]
    losses = [r.sup_loss for r in trainer.run()]
    assert all(mixed) and len(mixed) == 16 and np.isfinite(losses).all() and trainer.skipped == 0
    assert np.mean(losses[-4:]) < 0.85 * np.mean(losses[:4])
    image, truth = cases[2]
    dice = evaluate_case(predict(trainer.model, image, (16, 16, 16)).labels, truth, 2)[0]["dice"]
    assert dice > 0.3  # an untrained pair: below 0.07 (all foreground) or 0

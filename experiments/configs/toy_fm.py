"""Flow matching on toy 2-D data: CondOT path, velocity prediction, MLP.

Options (``toy_fm.py:OPTION,...``): ``eight_gaussians`` (default; the oracle knows its density, so
eval.json holds the exact NLL gap) or ``checkerboard`` (uniform on 8 squares, density 1/32: the
gap is against log 32); ``local``: a short run for smoke tests.

Launch::

    python -m experiments.main --config experiments/configs/toy_fm.py:checkerboard --workdir runs/toy_fm_checkerboard
    python -m experiments.main --config experiments/configs/toy_fm.py:eight_gaussians --workdir runs/toy_fm_8g
"""

from experiments.configs import default

DATASETS = ("eight_gaussians", "checkerboard")


def toy_data(config, opts: set[str]) -> None:
    """Set ``data.name`` from the options (one of :data:`DATASETS`)."""
    chosen = [d for d in DATASETS if d in opts]
    if len(chosen) > 1:
        raise ValueError(f"choose one data set, got {chosen}")
    config.data.name = chosen[0] if chosen else "eight_gaussians"


def get_config(arg: str | None = None):
    opts = default.parse_arg(arg, (*DATASETS, "local"))
    config = default.get_config("local" if "local" in opts else None)
    toy_data(config, opts)
    config.path.name = "condot"
    config.loss.prediction = "velocity"
    if "local" not in opts:
        config.model.mlp.hidden = (256, 256, 256)
        config.training.num_steps = 10_000
        config.optim.lr = 1e-3
        config.training.log_every = 500
        config.training.checkpoint_every = 2000
    return config

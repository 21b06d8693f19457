"""Figures: :mod:`.plots` draws (matplotlib only, plain arrays in, PNG + JSON sidecar out);
:mod:`.experiment` decides what an experiment plots and computes it from the model."""

from experiments.figures.plots import (
    density_2d,
    image_grid,
    image_trajectories,
    nfe_quality,
    samples_2d,
    save_figure,
    trajectories_2d,
    vector_fields,
)

__all__ = [
    "density_2d",
    "image_grid",
    "image_trajectories",
    "nfe_quality",
    "samples_2d",
    "save_figure",
    "trajectories_2d",
    "vector_fields",
]

"""Sweeps: a table's grid expanded into run specs (``grid``), launched here or on SLURM
(``launch``), priced before they run (``pricing``); ``command`` is ``nlrepro sweep``."""

from nlrepro.sweep.grid import (RunSpec, expand, grid_path, load_grid, reuse_done_twin,
                                write_spec)

__all__ = ["RunSpec", "expand", "grid_path", "load_grid", "reuse_done_twin", "write_spec"]

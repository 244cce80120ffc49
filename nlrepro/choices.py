"""Every named choice of a run, declared once (plain Python: no torch, no nlrepro imports).

Config validation, the model and data code, the sweep and the reports all read their lists
of valid names from here.
"""

from __future__ import annotations

# ---- model (paper Table 1 and Sec. 3-4) ---------------------------------------------------
ARCHS = ("c2d", "i3d_3x1x1", "i3d_3x3x3")
DEPTHS = (50, 101)
STAGES = ("res2", "res3", "res4", "res5")
# Residual blocks per stage of the paper's networks.
BLOCKS_PER_DEPTH = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
INSTANTIATIONS = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")
# Instantiations normalised by a softmax (the others divide by the number of keys).
SOFTMAX = ("gaussian", "embedded_gaussian")
SCOPES = ("spacetime", "space", "time")
NORMS = ("bn", "none")
# model.pretrained value for the proxy's own frame pre-training (nlrepro.proxy.pretrain).
PROXY_FRAMES = "proxy-frames"

# The profile every command uses when none is given (and `make`'s PROFILE): the timeline
# proxy, whose scorecard ranks the most claims within the 60-minute budget (docs/PROXY.md,
# "Which proxy is the default"). The others stay reachable by name.
DEFAULT_PROFILE = "timeline"
# The root profile of every synthetic one (`extends:` chains end here); kinetics is not in it.
PROXY_FAMILY = "proxy"

# ---- data, optimisation, launching ---------------------------------------------------------
SPLITS = ("train", "val", "test")
LIST_FORMATS = ("path_label", "kinetics_csv")
DECODERS = ("decord", "pyav")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")
LAUNCHERS = ("local", "slurm")
# Lightning loggers a run writes to (trainer.loggers); csv is required: the tables read
# metrics.csv.  TensorBoard's events go to run.rundir.tensorboard_dir.
LOGGERS = ("csv", "tensorboard")

# ---- the proxy task (nlrepro.proxy.generator) ----------------------------------------------
# What a pre-training frame is labelled with (data.proxy.pretrain_target).
FRAME_TARGETS = ("objects", "label")
BASE_FRAMES = 8        # event times and speeds are defined on an 8-frame clip
CUE_LENGTH = 2         # the cue lasts at most 2 base frames (data.proxy.cue_length)
MAX_PROBE_COPIES = 6   # identical probes at independent places (data.proxy.probe_copies)
# The proxy tasks (data.proxy.task): generator v5's single relation, v6's four kinds, v7's
# five kinds on a 32-frame timeline (nlrepro.proxy.timeline).
PROXY_TASKS = ("cuematch", "relations", "timeline")
RELATION_KINDS = ("time", "space", "spacetime", "chain")  # drawn uniformly per clip (v6)
TIMELINE_FRAMES = 32   # v7 draws this many frames per clip; data.proxy.frames takes the last
# The proxy task's classes, in id order (nlrepro.proxy.generator draws them).
PROXY_CLASSES = ("match_yellow", "match_cyan", "clash_yellow", "clash_cyan")

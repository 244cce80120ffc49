"""``slurm_cluster``: one real single-node SLURM cluster for the whole test session.

Skipped with the reason when this machine cannot host it (not root, not Debian,
packages not installable); ``NLREPRO_REQUIRE_SLURM=1`` (set by ``.ci/run``) turns
that skip into a failure.  A bring-up that fails on a capable machine always fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import cluster as slurm  # noqa: E402  (tests/slurm/cluster.py)


def _unavailable(reason: str) -> None:
    if os.environ.get("NLREPRO_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM cluster required (NLREPRO_REQUIRE_SLURM=1) but {reason}",
                    pytrace=False)
    pytest.skip(f"no local SLURM cluster: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running cluster; ``SLURM_CONF`` is exported to this process (and so to submitit)."""
    reason = slurm.unavailable_reason()
    if reason:
        _unavailable(reason)
    # munged needs every folder above its socket to be world-executable, which
    # pytest's private tmp folders are not: use a fresh folder under /tmp.
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="nlrepro-slurm-"))
    root.chmod(0o755)
    try:
        install_s = slurm.ensure_packages(root / "apt.log")
    except slurm.ClusterUnavailable as err:
        _unavailable(str(err))
    cluster = slurm.SlurmCluster(root).start()
    cluster.timings["install"] = install_s
    print(f"\nSLURM cluster up in {cluster.timings['bring_up']:.1f}s "
          f"(install {install_s:.1f}s): {cluster.timings}", file=sys.stderr)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        keep = os.environ.get("NLREPRO_KEEP_SLURM") == "1"
        cluster.stop(remove=not keep)

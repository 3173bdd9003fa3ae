"""The Hydra configs, a package so that an installed ``ood-train`` finds them (``pkg://``)."""

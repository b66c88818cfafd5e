"""MCHAD experiment framework: hypersphere-based OOD detectors on Lightning 2 and Hydra 1.3."""

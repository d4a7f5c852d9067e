"""isokl: iso-KL calibrated activation steering."""

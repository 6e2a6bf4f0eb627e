"""The one engine loop under every command: a window of images whose masked-input jobs fill every engine batch
(window.py), a scorer that makes the masked inputs and runs the engine on the host or a GPU (scorer.py,
device_scorer.py), and one finishing step from score sums to weights (finish.py). scoring.py holds the engine call
every perturbed batch goes through, the metrics' included.
"""

from camrt.runtime.engine.scoring import checked_logits, finite_rows, non_finite, score_rows, softmax

__all__ = ["checked_logits", "finite_rows", "non_finite", "score_rows", "softmax"]

"""Training on the float shadow of an int8 graph: reverse-mode gradients, 8-bit fake quantisation with
a straight-through estimator, fixed pruning masks, and fine-tuning of pruned models (distillation
from the dense master, feedback labels) that re-quantizes back to an ordinary int8 model."""

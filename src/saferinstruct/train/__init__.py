"""Training, as thin layers over TRL: `reverse.py` (reversed instruction tuning, stage 1);
SFT and DPO for alignment come later. `common.py` holds what they share: precision chosen
from the hardware, a wall-clock budget, the loss-curve plot, the training card."""

"""Training, as thin layers over TRL: `reverse.py` (reversed instruction tuning, which
makes the reverse model the induce stage runs), `sft.py` (SFT on the chosen answers) and
`dpo.py` (DPO from the SFT model). `common.py` holds what they share: precision chosen
from the hardware, a wall-clock guard, the loss-curve plot, the training card. Every
setting of SFT and DPO is one `config.TrainStepConfig`, passed whole."""

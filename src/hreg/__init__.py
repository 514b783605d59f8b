"""hreg: Hydra-configured experiments on regularization (MLP on 5% of MNIST)."""

import warnings

# datamaestro 1.5.2 (pinned: newer ones break the MNIST plugin) imports pkg_resources.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

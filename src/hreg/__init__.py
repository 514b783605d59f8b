"""hreg: Hydra-configured experiments on regularization (MLP on 5% of MNIST)."""

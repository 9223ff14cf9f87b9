"""fragile-neurons: nodal-dropout fragility of first-layer neurons and FGSM targeting.

Implements Pravin, Martino, Nicosia and Ojha, "Adversarial Robustness in Deep Learning: Attacks on
Fragile Neurons" (ICANN 2021) as a DVC pipeline. Every quantity is defined in method.md.
"""

__version__ = "0.1.0"

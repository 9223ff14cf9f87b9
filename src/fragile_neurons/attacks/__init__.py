"""Attacks and what they measure: FGSM and PGD, how FGSM targets neurons, the AutoAttack masking
check, and how a network is attacked on the test split."""

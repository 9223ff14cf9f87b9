"""The raw datasets: where torchvision keeps them, their checksums and download, the safe parsers
of their files (CIFAR-10's pickles, MNIST's idx), and the seeded splits drawn from them."""

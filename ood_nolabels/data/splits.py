"""The names of a run's splits: the normal training and test images, then one per OOD set."""

NORMAL_TRAIN = "normal_train"
NORMAL_TEST = "normal_test"

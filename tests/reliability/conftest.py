from tests.train.test_trainer import data  # noqa: F401  (the trainer tests' small corpus, a fixture)

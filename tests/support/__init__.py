"""Helpers the tests share (not tests): the defended zoo, the hand-written reference attacks, the run-folder
checks and ``need`` (fail, naming what to install). Tests import them as ``support.<module>``; the benches under
``bench/`` put ``tests/`` on ``sys.path`` and import them the same way."""

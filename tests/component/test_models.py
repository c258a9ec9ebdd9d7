"""Reference models: shapes, training to a useful accuracy, the pretrained cache, eval helpers."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from shieldkit.core.layers import Normalize
from shieldkit.data import ImageData, mnist
from shieldkit.models import (
    MODELS,
    accuracy,
    fit_classifier,
    mlp,
    mnist_cnn,
    predict,
    pretrained,
    tiny_cnn,
)
from shieldkit.models import training as training_module


def _separable(n: int = 64, size: int = 8, seed: int = 0) -> ImageData:
    """Two classes told apart by brightness: any model can learn it in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 1, size, size, generator=generator) * 0.3 + 0.6 * y.view(-1, 1, 1, 1)).clamp(
        0, 1
    )
    return ImageData(x, y, classes=("dark", "bright"), name="separable", split="train")


# -- factories ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "kwargs", "input_shape", "classes"),
    [
        (mnist_cnn, {}, (3, 1, 28, 28), 10),
        (
            mnist_cnn,
            {"in_channels": 3, "num_classes": 5, "input_size": 32, "width": 8},
            (2, 3, 32, 32),
            5,
        ),
        (mnist_cnn, {"input_size": 8, "width": 4}, (2, 1, 8, 8), 10),
        (mlp, {}, (3, 1, 28, 28), 10),
        (mlp, {"in_features": 48, "hidden": (16, 8), "num_classes": 4}, (2, 3, 4, 4), 4),
        (mlp, {"in_features": 64, "hidden": ()}, (2, 1, 8, 8), 10),
        (tiny_cnn, {}, (3, 1, 16, 16), 10),
        (tiny_cnn, {"in_channels": 3, "num_classes": 7, "input_size": 28}, (2, 3, 28, 28), 7),
    ],
)
def test_factories_map_images_to_logits(factory, kwargs, input_shape, classes):
    model = factory(**kwargs).eval()
    logits = model(torch.rand(*input_shape))
    assert logits.shape == (input_shape[0], classes)
    assert logits.dtype == torch.float32


def test_models_lists_the_factories_with_keyword_only_defaults():
    assert [factory.__name__ for factory in MODELS] == ["mnist_cnn", "mlp", "tiny_cnn"]
    for factory in MODELS:
        assert factory.__doc__.strip().splitlines()[0]
        for param in inspect.signature(factory).parameters.values():
            assert param.kind is inspect.Parameter.KEYWORD_ONLY
            assert param.default is not inspect.Parameter.empty


def test_normalize_is_the_first_layer_when_asked():
    assert isinstance(next(iter(mnist_cnn().children())), Normalize)
    assert not any(isinstance(m, Normalize) for m in mnist_cnn(normalize=False).modules())
    assert isinstance(next(iter(mlp(normalize=True).children())), Normalize)
    assert not any(isinstance(m, Normalize) for m in mlp().modules())


def test_tiny_cnn_has_batchnorm_and_dropout_and_seeded_weights():
    kinds = {type(m) for m in tiny_cnn().modules()}
    assert nn.BatchNorm2d in kinds and nn.Dropout in kinds
    torch.manual_seed(5)
    first = tiny_cnn().state_dict()
    torch.manual_seed(5)
    second = tiny_cnn().state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (mnist_cnn, {"input_size": 5}, "input_size must be at least 6"),
        (mnist_cnn, {"width": 0}, "width must be an int >= 1"),
        (mlp, {"hidden": (8, 0)}, r"hidden\[1\] must be an int >= 1"),
        (tiny_cnn, {"num_classes": 0}, "num_classes must be an int >= 1"),
    ],
)
def test_factories_reject_bad_arguments(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


# -- training and evaluation ---------------------------------------------------------


def test_mnist_cnn_learns_mnist_in_one_epoch_on_10k_images():
    train = mnist("train").subset(10_000, seed=0)
    test = mnist("test").head(1000)
    torch.manual_seed(0)
    # Batches of 32 give the 313 Adam steps that one 10k epoch needs to pass 95% (about 96%).
    model = fit_classifier(mnist_cnn(), train, epochs=1, batch_size=32, seed=0)
    assert not model.training
    assert accuracy(model, test.x, test.y) >= 0.95


def test_fit_classifier_accepts_a_tensor_pair_and_is_deterministic():
    data = _separable()
    results = []
    for _ in range(2):
        torch.manual_seed(1)
        model = tiny_cnn(input_size=8, num_classes=2)
        fit_classifier(model, (data.x, data.y), epochs=3, batch_size=16, lr=1e-2, seed=7)
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    assert accuracy(model, data) == 1.0


def test_fit_classifier_leaves_the_global_rng_alone():
    model, data = mlp(in_features=64, hidden=(4,), num_classes=2), _separable()
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    fit_classifier(model, data, epochs=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"lr": -1.0}, "lr must be a positive finite number"),
    ],
)
def test_fit_classifier_validates_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_classifier(mlp(in_features=64), _separable(), **kwargs)


def test_fit_classifier_names_a_model_with_too_few_outputs():
    with pytest.raises(ValueError, match="label 1 .* only 1 outputs"):
        fit_classifier(mlp(in_features=64, num_classes=1), _separable())


def test_fit_classifier_rejects_what_is_not_a_model_or_data():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fit_classifier(lambda x: x, _separable())
    with pytest.raises(TypeError, match="data must be ImageData or an"):
        fit_classifier(mlp(in_features=64), "mnist")


def test_accuracy_and_predict_restore_every_training_flag():
    model = tiny_cnn(input_size=8, num_classes=2)
    model.train()
    model.dropout.eval()  # a mixed state must come back exactly as it was
    before = {name: m.training for name, m in model.named_modules()}
    running_mean = model.bn.running_mean.clone()
    data = _separable()
    predicted = predict(model, data.x, batch_size=7)
    assert predicted.dtype == torch.int64 and predicted.shape == (len(data),)
    assert 0.0 <= accuracy(model, data.x, data.y, batch_size=5) <= 1.0
    assert {name: m.training for name, m in model.named_modules()} == before
    assert torch.equal(model.bn.running_mean, running_mean)  # eval mode: BN untouched


def test_predict_is_consistent_across_batch_sizes():
    model = mlp(in_features=64, hidden=(8,), num_classes=2)
    x = _separable().x
    assert torch.equal(predict(model, x, batch_size=1), predict(model, x, batch_size=1000))


def test_accuracy_validates_arguments():
    model = mlp(in_features=64)
    data = _separable()
    with pytest.raises(ValueError, match="y .* is required"):
        accuracy(model, data.x)
    with pytest.raises(ValueError, match="64 images but y has 3 labels"):
        accuracy(model, data.x, data.y[:3])
    with pytest.raises(ValueError, match=r"x must be float images \[N, C, H, W\]"):
        predict(model, data.x[0])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        predict(model, data.x, batch_size=0)


# -- the pretrained cache --------------------------------------------------------------


def test_pretrained_trains_once_then_loads_from_cache(tmp_path, monkeypatch):
    first = pretrained("mlp", "digits", n_train=300, cache_dir=tmp_path)
    assert not first.training
    cached = list((tmp_path / "models").glob("*.pt"))
    assert len(cached) == 1 and not list((tmp_path / "models").glob("*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("pretrained trained again instead of loading its cache")

    monkeypatch.setattr(training_module, "fit_classifier", no_training)
    second = pretrained("mlp", "digits", n_train=300, cache_dir=tmp_path)
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value)
    # A different argument is a different cache entry, so it must train.
    with pytest.raises(AssertionError, match="trained again"):
        pretrained("mlp", "digits", n_train=300, seed=1, cache_dir=tmp_path)


def test_pretrained_uses_the_environment_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIELDKIT_CACHE", str(tmp_path))
    model = pretrained("tiny_cnn", "digits", n_train=100)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert len(list((tmp_path / "models").glob("tiny_cnn-digits-*.pt"))) == 1


def test_pretrained_replaces_a_corrupt_cache_file(tmp_path):
    pretrained("mlp", "digits", n_train=100, cache_dir=tmp_path)
    (path,) = (tmp_path / "models").glob("*.pt")
    path.write_bytes(b"not a checkpoint")
    model = pretrained("mlp", "digits", n_train=100, cache_dir=tmp_path)
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    assert torch.load(path, weights_only=True).keys() == model.state_dict().keys()


def test_pretrained_learns_digits(tmp_path):
    from shieldkit.data import digits

    model = pretrained("mnist_cnn", "digits", epochs=2, cache_dir=tmp_path)
    assert accuracy(model, digits("test")) >= 0.9


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"epochs": 0}, ValueError, "epochs must be an int >= 1"),
        ({"n_train": 0}, ValueError, "n_train must be None or an int >= 1"),
        ({"name": "no_such_model"}, (ValueError, KeyError), "no_such_model"),
    ],
)
def test_pretrained_validates_arguments(tmp_path, kwargs, error, message):
    kwargs = {"data": "digits", "cache_dir": tmp_path, **kwargs}
    with pytest.raises(error, match=message):
        pretrained(**kwargs)

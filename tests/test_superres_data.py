"""Tests of auxsearch.tasks.superres_data: the bundled photos and tiny PNG folders written here
in the DIV2K and Set5 layouts (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from auxsearch.errors import ConfigError
from auxsearch.tasks import data_path_keys, resolve_data_paths
from auxsearch.tasks.data import ImageData
from auxsearch.tasks.sr_items import FixedCrops, WholeImages, bicubic_downscale, dihedral
from auxsearch.tasks.superres_data import (
    DATASETS,
    PHOTOS_TEST,
    PHOTOS_TRAIN,
    PHOTOS_VAL,
    _photo,
    load_superres_data,
)


@pytest.fixture(scope="module")
def photos() -> ImageData:
    return load_superres_data(None)


def _interior_error(lr: torch.Tensor, hr: torch.Tensor, scale: int, margin: int = 3) -> float:
    """Largest |LR - downscale(HR)| away from the patch border, where the bicubic support of
    the whole-image LR reaches pixels the patch does not hold."""
    made = bicubic_downscale(hr, scale)
    inner = (..., slice(margin, -margin), slice(margin, -margin))
    return (made[inner] - lr[inner]).abs().max().item()


# ---------------------------------------------------------------- photos


def test_photos_defaults(photos: ImageData) -> None:
    assert (photos.in_chans, photos.num_classes, photos.image_size, photos.scale) == (3, 1, 24, 2)
    assert (len(photos.train), len(photos.test)) == (512, 8 * len(PHOTOS_TEST))
    assert isinstance(photos.val, FixedCrops) and len(photos.val) == 8 * len(PHOTOS_VAL)
    assert photos.std == (1.0, 1.0, 1.0) and photos.collate is None
    assert photos.eval_batch_size is None  # fixed-size crops: any batch size stacks
    hr = torch.cat([p.hr.flatten(1) for p in photos.train.pairs], dim=1).float() / 255
    assert photos.mean == pytest.approx(hr.mean(dim=1).tolist(), abs=1e-5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_photos_shapes_and_range(scale: int) -> None:
    data = load_superres_data({"name": "photos", "scale": scale, "patch": 16, "test_patch": 20})
    torch.manual_seed(0)
    for lr, hr in [data.train[i] for i in range(4)] + [data.test[0], data.test[9], data.val[7]]:
        assert lr.dtype == hr.dtype == torch.float32
        assert hr.shape == (3, lr.shape[1] * scale, lr.shape[2] * scale)
        assert 0.0 <= lr.min() and lr.max() <= 1.0 and 0.0 <= hr.min() and hr.max() <= 1.0
    assert data.train[0][0].shape == (3, 16, 16) and data.test[0][0].shape == (3, 20, 20)
    for pair in data.train.pairs + data.val.pairs + data.test.pairs:
        assert pair.hr.shape[1] % scale == 0 and pair.hr.shape[2] % scale == 0
        assert pair.lr.shape[1:] == (pair.hr.shape[1] // scale, pair.hr.shape[2] // scale)


@pytest.mark.parametrize("scale", [2, 4])
def test_lr_patch_is_the_downscaled_hr_patch(scale: int) -> None:
    data = load_superres_data({"scale": scale, "test_patch": 32})
    torch.manual_seed(3)
    items = [data.train[i] for i in range(6)] + [data.test[i] for i in (0, 5, 12)]
    for lr, hr in items:  # augmented ones too: the same symmetry is applied to both
        assert _interior_error(lr, hr, scale) <= 1.5 / 255
    lr, hr = data.test[0]
    shifted = torch.roll(hr, shifts=(scale, scale), dims=(1, 2))  # one LR pixel off
    assert _interior_error(lr, shifted, scale) > 10 / 255


def test_split_is_fixed_and_whole_images(photos: ImageData) -> None:
    assert [p.name for p in photos.train.pairs] == list(PHOTOS_TRAIN)
    assert [p.name for p in photos.test.pairs] == list(PHOTOS_TEST) == ["chelsea", "coffee"]
    assert [p.name for p in photos.val.pairs] == list(PHOTOS_VAL) == ["rocket"]
    assert len(set(PHOTOS_TRAIN) | set(PHOTOS_VAL) | set(PHOTOS_TEST)) == 6  # disjoint
    assert "motorcycle_left" in PHOTOS_TRAIN and "motorcycle_right" in PHOTOS_TRAIN  # one scene
    i, y, x = photos.test.crops[3]
    _, hr = photos.test[3]
    source = _photo(PHOTOS_TEST[i]).float() / 255  # the crop really comes from that photo
    assert torch.equal(hr, source[:, 2 * y:2 * y + 96, 2 * x:2 * x + 96])


def test_test_items_are_deterministic(photos: ImageData) -> None:
    again = load_superres_data({"name": "photos"})
    other = load_superres_data({"name": "photos", "seed": 1})
    torch.manual_seed(123)  # the global RNG plays no part in validation or test items
    for split in ("val", "test"):
        mine, theirs = getattr(photos, split), getattr(again, split)
        for i in range(len(mine)):
            assert all(torch.equal(a, b) for a, b in zip(mine[i], theirs[i], strict=True))
            assert all(torch.equal(a, b) for a, b in zip(mine[i], mine[i], strict=True))
    assert photos.test.crops == again.test.crops != other.test.crops
    assert photos.val.crops == again.val.crops != other.val.crops


def test_train_patches_follow_the_torch_seed(photos: ImageData) -> None:
    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return torch.stack([photos.train[i][1] for i in range(3)])

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))
    torch.manual_seed(5)
    loader = DataLoader(photos.train, batch_size=4, generator=torch.Generator().manual_seed(5))
    lr, hr = next(iter(loader))
    assert lr.shape == (4, 3, 24, 24) and hr.shape == (4, 3, 48, 48)
    short = load_superres_data({"patches_per_epoch": 5})
    assert len(list(short.train)) == 5  # plain iteration ends with the epoch


def test_dihedral_gives_eight_distinct_views() -> None:
    image = torch.arange(12.0).view(1, 3, 4)[:, :3, :3]
    views = {tuple(dihedral(image, code).flatten().tolist()) for code in range(8)}
    assert len(views) == 8


# ---------------------------------------------------------------- folders


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(path, array: np.ndarray, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert("L") if mode == "L" else image).save(path)


def _lr_of(array: np.ndarray, scale: int) -> np.ndarray:
    hr = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    lr = bicubic_downscale(hr, scale)
    return (lr * 255).round().byte().permute(1, 2, 0).numpy()


def _div2k(root, scale: int = 2, sizes=((40, 52), (41, 37), (44, 44))) -> dict:
    """DIV2K_train_HR/0001.png ... with DIV2K_train_LR_bicubic/X2/0001x2.png ..."""
    hr_dir, lr_dir = root / "DIV2K_train_HR", root / "DIV2K_train_LR_bicubic" / f"X{scale}"
    written = {}
    for i, (h, w) in enumerate(sizes, start=1):
        array = _noise(h, w, i)
        _save(hr_dir / f"{i:04d}.png", array)
        lr = _lr_of(array[: h - h % scale, : w - w % scale], scale)
        _save(lr_dir / f"{i:04d}x{scale}.png", lr)
        written[f"{i:04d}"] = (array, lr)
    return {"train_hr": str(hr_dir), "train_lr": str(lr_dir)}, written


def _set5(root, scale: int = 2) -> dict:
    """Set5/HR/baby.png ... with Set5/LR_bicubic/X2/babyx2.png; 'bird' is greyscale."""
    hr_dir, lr_dir = root / "Set5" / "HR", root / "Set5" / "LR_bicubic" / f"X{scale}"
    for name, (h, w), mode in [("baby", (32, 36), "RGB"), ("bird", (28, 26), "L")]:
        array = _noise(h, w, len(name))
        if mode == "L":
            array = np.repeat(np.asarray(Image.fromarray(array).convert("L"))[..., None], 3, 2)
        _save(hr_dir / f"{name}.png", array, mode)
        _save(lr_dir / f"{name}x{scale}.png", _lr_of(array, scale), mode)
    return {"test_hr": str(hr_dir), "test_lr": str(lr_dir)}


def test_folders_div2k_and_set5(tmp_path) -> None:
    train_keys, written = _div2k(tmp_path)
    cfg = {"name": "folders", "patch": 8, "patches_per_epoch": 6, **train_keys,
           **_set5(tmp_path)}
    data = load_superres_data(cfg)
    assert (data.scale, data.image_size, len(data.train), len(data.test)) == (2, 8, 6, 2)
    assert data.std == (1.0, 1.0, 1.0) and len(data.mean) == 3 and data.eval_batch_size == 1
    pairs = {p.name: p for p in data.train.pairs + data.val.pairs}
    assert sorted(pairs) == ["0001", "0002", "0003"] and len(data.val) == 1  # ceil(0.1 * 3)
    array, lr = written["0002"]
    assert tuple(pairs["0002"].hr.shape) == (3, 40, 36)  # 41 x 37 cropped to a multiple of 2
    assert torch.equal(pairs["0002"].lr, torch.from_numpy(lr).permute(2, 0, 1))
    assert torch.equal(pairs["0002"].hr, torch.from_numpy(array[:40, :36]).permute(2, 0, 1))
    torch.manual_seed(0)
    lr_patch, hr_patch = data.train[0]
    assert lr_patch.shape == (3, 8, 8) and hr_patch.shape == (3, 16, 16)
    (baby_lr, baby_hr), (bird_lr, bird_hr) = data.test[0], data.test[1]
    assert baby_hr.shape == (3, 32, 36) and baby_lr.shape == (3, 16, 18)
    assert bird_hr.shape == (3, 28, 26) and torch.equal(bird_hr[0], bird_hr[2])  # grey -> RGB
    assert bird_lr.shape == (3, 14, 13) and torch.equal(bird_lr[1], bird_lr[2])
    one = DataLoader(data.test, batch_size=1, collate_fn=data.collate)
    assert [hr.shape[-2:] for _, hr in one] == [(32, 36), (28, 26)]
    with pytest.raises(ConfigError, match="batch size 1"):
        next(iter(DataLoader(data.test, batch_size=2, collate_fn=data.collate)))


def test_folders_make_lr_and_pair_same_stem(tmp_path) -> None:
    train_keys, written = _div2k(tmp_path, scale=3, sizes=((30, 33), (31, 35)))
    test_hr, test_lr = tmp_path / "bench" / "HR", tmp_path / "bench" / "LR"
    _save(test_hr / "zebra.png", written["0001"][0])
    _save(test_lr / "zebra.png", written["0001"][1])  # same stem, no x3 suffix
    data = load_superres_data({"name": "folders", "scale": 3, "patch": 9,
                               "train_hr": train_keys["train_hr"], "test_hr": str(test_hr),
                               "test_lr": str(test_lr), "train_limit": 1})
    assert len(data.train.pairs) == len(data.val.pairs) == 1
    name = data.train.pairs[0].name
    made = data.train.pairs[0].lr  # no train_lr: made by the documented downscale
    assert torch.equal(made, torch.from_numpy(written[name][1]).permute(2, 0, 1))
    assert data.test[0][0].shape == (3, 10, 11)


def test_folders_size_mismatch_names_the_file(tmp_path) -> None:
    train_keys, _ = _div2k(tmp_path)
    _save(tmp_path / "DIV2K_train_LR_bicubic" / "X2" / "0003x2.png", _noise(21, 22, 0))
    cfg = {"name": "folders", "patch": 8, **train_keys, "test_hr": train_keys["train_hr"]}
    with pytest.raises(ConfigError) as info:
        load_superres_data(cfg)
    assert info.value.key == "data.train_lr"
    assert "0003x2.png is 22x21" in info.value.message and "22x22" in info.value.message


def test_folders_missing_partner_and_folders(tmp_path) -> None:
    train_keys, _ = _div2k(tmp_path)
    base = {"name": "folders", "patch": 8, **train_keys, "test_hr": train_keys["train_hr"]}
    with pytest.raises(ConfigError) as info:  # an X3 folder given for scale 2
        load_superres_data({**base, "scale": 3})
    assert info.value.key == "data.train_lr" and "0001.png" in info.value.message
    (tmp_path / "empty").mkdir()
    cases = [({**base, "test_hr": str(tmp_path / "nowhere")}, "data.test_hr", "not found"),
             ({**base, "train_hr": str(tmp_path / "empty")}, "data.train_hr", "no images"),
             ({**base, "test_hr": None}, "data.test_hr", "required"),
             ({**base, "patch": 23}, "data.patch", "do not fit")]
    for cfg, key, words in cases:
        with pytest.raises(ConfigError) as info:
            load_superres_data(cfg)
        assert info.value.key == key and words in info.value.message


def test_folders_validation_carved_from_train(tmp_path) -> None:
    sizes = ((20, 22), (24, 20), (22, 22), (26, 24), (20, 20))
    train_keys, written = _div2k(tmp_path, sizes=sizes)
    cfg = {"name": "folders", "patch": 6, **train_keys, **_set5(tmp_path), "val_fraction": 0.4}
    data, again = load_superres_data(cfg), load_superres_data(cfg)
    train, val = [p.name for p in data.train.pairs], [p.name for p in data.val.pairs]
    assert len(val) == 2 and len(train) == 3 and set(train).isdisjoint(val)
    assert sorted(train + val) == sorted(written)
    assert (train, val) == ([p.name for p in again.train.pairs], [p.name for p in again.val.pairs])
    assert isinstance(data.val, WholeImages)  # scored like test: whole images, no random patch
    torch.manual_seed(0)
    first = data.val[1]
    torch.manual_seed(1)
    assert all(torch.equal(a, b) for a, b in zip(first, data.val[1], strict=True))
    lr, hr = data.val[0]
    assert torch.equal(lr, torch.from_numpy(written[val[0]][1]).permute(2, 0, 1).float() / 255)
    assert [p.name for p in data.test.pairs] == ["baby", "bird"]  # the test folder, unchanged
    limited = load_superres_data({**cfg, "val_limit": 1, "train_limit": 2})
    assert [p.name for p in limited.val.pairs] == val[:1]
    assert [p.name for p in limited.train.pairs] == train[:2]
    assert len(load_superres_data({**cfg, "val_fraction": 0.1}).val) == 1
    assert len(load_superres_data({k: v for k, v in cfg.items() if k != "val_fraction"}).val) == 1
    with pytest.raises(ConfigError) as info:
        load_superres_data({**cfg, "val_fraction": 0.85})
    assert info.value.key == "data.val_fraction" and "0.85 of 5" in info.value.message


def test_folders_given_validation_folder(tmp_path) -> None:
    train_keys, _ = _div2k(tmp_path)
    val_keys, _ = _div2k(tmp_path / "valid", sizes=((30, 32),))
    cfg = {"name": "folders", "patch": 8, **train_keys, **_set5(tmp_path),
           "val_hr": val_keys["train_hr"], "val_lr": val_keys["train_lr"]}
    data = load_superres_data(cfg)
    assert [p.name for p in data.train.pairs] == ["0001", "0002", "0003"]  # nothing carved
    assert [p.name for p in data.val.pairs] == ["0001"] and data.val[0][1].shape == (3, 30, 32)
    cases = [({**cfg, "val_fraction": 0.2}, "data.val_fraction"),
             ({**cfg, "val_hr": None}, "data.val_lr"),
             ({**cfg, "val_hr": cfg["test_hr"], "val_lr": None}, "data.val_hr"),
             ({**cfg, "val_hr": str(tmp_path / "none")}, "data.val_hr")]
    for bad, key in cases:
        with pytest.raises(ConfigError) as info:
            load_superres_data(bad)
        assert info.value.key == key


def test_resolve_data_paths_resolves_exactly_the_declared_keys(tmp_path) -> None:
    declared = ("train_hr", "train_lr", "val_hr", "val_lr", "test_hr", "test_lr")
    assert data_path_keys("superres", {"name": "folders"}) == declared
    assert data_path_keys("superres", None) == data_path_keys("superres", {"name": "zzz"}) == ()
    cfg = {"name": "folders", **{k: f"data/{k}" for k in declared}, "root": "data/root",
           "patch": 8, "scale": 2}
    resolved = resolve_data_paths("superres", cfg, tmp_path)
    assert resolved == {**cfg, **{k: str((tmp_path / "data" / k).resolve()) for k in declared}}
    assert cfg["train_hr"] == "data/train_hr"  # a copy: the block itself is left alone
    absolute = {"name": "folders", "train_hr": "/abs/hr", "test_hr": None, "val_lr": ""}
    assert resolve_data_paths("superres", absolute, tmp_path) == absolute
    assert resolve_data_paths("superres", cfg, None) == cfg
    assert resolve_data_paths("superres", None, tmp_path) == {}
    assert resolve_data_paths("superres", {}, tmp_path) == {}
    photos = {"name": "photos", "train_hr": "x"}  # photos read no files: nothing is a path
    assert resolve_data_paths("superres", photos, tmp_path) == photos
    unknown = {"name": "div2k", "train_hr": "x"}  # left for the loader to refuse
    assert resolve_data_paths("superres", unknown, tmp_path) == unknown
    root = resolve_data_paths("classification", {"name": "cifar10", "root": "d"}, tmp_path)
    assert root == {"name": "cifar10", "root": str(tmp_path / "d")}
    assert resolve_data_paths("classification", {"root": "d"}, tmp_path) == {"root": "d"}
    # the resolved block loads from another working directory
    train_keys, _ = _div2k(tmp_path / "data")
    relative = {"name": "folders", "patch": 8,
                **{k: str(Path(v).relative_to(tmp_path)) for k, v in train_keys.items()},
                "test_hr": str(Path(train_keys["train_hr"]).relative_to(tmp_path)),
                "val_fraction": 0.5}
    assert len(load_superres_data(resolve_data_paths("superres", relative, tmp_path)).val) == 2


# ---------------------------------------------------------------- bad input


def test_unknown_name_lists_known() -> None:
    with pytest.raises(ConfigError) as info:
        load_superres_data({"name": "div2k"}, key="task.data")
    assert info.value.key == "task.data.name" and "known: folders, photos" in info.value.message
    assert sorted(DATASETS) == ["folders", "photos"]


@pytest.mark.parametrize(("cfg", "bad_key"), [
    ({"scale": 8}, "data.scale"),
    ({"scale": True}, "data.scale"),
    ({"patch": 0}, "data.patch"),
    ({"patch": 300}, "data.patch"),
    ({"test_patch": 80, "scale": 4}, "data.test_patch"),
    ({"patches_per_epoch": "many"}, "data.patches_per_epoch"),
    ({"test_crops": 0}, "data.test_crops"),
    ({"seed": -1}, "data.seed"),
    ({"pach": 24}, "data.pach"),
    ({"name": "folders", "train_hr": "x", "seed": 0}, "data.seed"),
    ({"name": "folders", "train_hr": "x", "test_hr": "y", "test_limit": 0}, "data.test_limit"),
    ({"name": "folders", "train_hr": "x", "test_hr": "y", "val_limit": 0}, "data.val_limit"),
    ({"name": "folders", "train_hr": "x", "test_hr": "y", "val_fraction": 1.0},
     "data.val_fraction"),
    ({"val_fraction": 0.1}, "data.val_fraction"),
    ("photos", "data"),
])
def test_bad_values_name_the_key(cfg, bad_key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_superres_data(cfg)
    assert info.value.key == bad_key

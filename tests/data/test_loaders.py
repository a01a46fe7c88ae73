"""Image folders, tables, .npz archives and dataset spec strings: happy paths and every bad input."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from transferkit.data import (
    DomainDataset,
    list_datasets,
    load_dataset,
    load_image_folder,
    load_npz,
    load_table,
    parse_spec,
)
from transferkit.data.folder import ImageFolderInputs
from transferkit.errors import ConfigError, DataError

# ----------------------------------------------------------------------------- helpers


def _png(path, color=(255, 0, 0), size=(10, 7), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        img = Image.new("L", size, color if isinstance(color, int) else 128)
    elif mode == "RGBA":
        img = Image.new("RGBA", size, tuple(color) + (255,))
    else:
        img = Image.new("RGB", size, tuple(color))
    img.save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    _png(root / "cat" / "a.png", (255, 0, 0))
    _png(root / "cat" / "b.png", (0, 255, 0), size=(30, 12))
    _png(root / "cat" / "nested" / "c.png", 200, mode="L")
    _png(root / "dog" / "d.jpg", (0, 0, 255))
    _png(root / "dog" / "e.PNG", (10, 20, 30), mode="RGBA")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"junk")  # hidden files are skipped
    (root / ".cache").mkdir()  # hidden folders are not classes
    return root


# ----------------------------------------------------------------------------- image folder


def test_folder_happy_path(folder):
    ds = load_image_folder(folder, size=8)
    assert isinstance(ds, DomainDataset)
    assert ds.modality == "image" and ds.name == "pets"
    assert ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert isinstance(ds.inputs, ImageFolderInputs) and len(ds) == 5
    img = ds.inputs[0]
    assert img.shape == (8, 8, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[4, 4], [1.0, 0.0, 0.0], atol=1e-6)
    gray = ds.inputs[2]  # grayscale converted to RGB
    np.testing.assert_allclose(gray[0, 0], [200 / 255] * 3, atol=1e-6)
    assert ds.inputs[-1].shape == (8, 8, 3)  # RGBA -> RGB, negative index
    for i in range(len(ds)):
        assert 0.0 <= ds.inputs[i].min() and ds.inputs[i].max() <= 1.0
    with pytest.raises(IndexError):
        ds.inputs[5]


def test_folder_subset_and_fingerprint(folder):
    ds = load_image_folder(folder, size=8, cache_size=2)
    sub = ds.subset([4, 0])
    assert isinstance(sub.inputs, ImageFolderInputs)
    assert sub.labels.tolist() == [1, 0]
    np.testing.assert_array_equal(sub.inputs[1], ds.inputs[0])
    assert len(ds.inputs[1:3]) == 2
    fp = ds.fingerprint()
    assert fp == load_image_folder(folder, size=8).fingerprint()
    assert fp != load_image_folder(folder, size=16).fingerprint()
    assert sub.fingerprint() != fp
    f = folder / "cat" / "a.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_image_folder(folder, size=8).fingerprint() != fp
    # the cache returns copies, so callers cannot corrupt it
    a = ds.inputs[0]
    a[:] = 0
    assert ds.inputs[0].max() == 1.0


def test_folder_missing(tmp_path):
    with pytest.raises(DataError, match=r"nope.*does not exist"):
        load_image_folder(tmp_path / "nope")


def test_folder_is_a_file(tmp_path):
    f = _png(tmp_path / "x.png")
    with pytest.raises(DataError, match=r"x\.png.*is a file, not a folder"):
        load_image_folder(f)


def test_folder_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*no class subfolders.*no images at all"):
        load_image_folder(tmp_path / "empty")


def test_folder_loose_images(tmp_path):
    _png(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match=r"no class subfolders.*1 image\(s\) directly"):
        load_image_folder(tmp_path / "flat")


def test_folder_classes_without_any_images(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    with pytest.raises(DataError, match=r"no images in any of its 2 class subfolder"):
        load_image_folder(tmp_path / "d")


def test_folder_one_empty_class(tmp_path):
    _png(tmp_path / "d" / "cat" / "a.png")
    (tmp_path / "d" / "dog").mkdir()
    (tmp_path / "d" / "dog" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"class folder 'dog' has no images.*readme\.txt"):
        load_image_folder(tmp_path / "d")


def test_folder_corrupt_image(tmp_path):
    _png(tmp_path / "d" / "cat" / "a.png")
    (tmp_path / "d" / "dog").mkdir()
    (tmp_path / "d" / "dog" / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"corrupt image .*bad\.png"):
        load_image_folder(tmp_path / "d")


def test_folder_truncated_image(tmp_path):
    good = _png(tmp_path / "d" / "cat" / "a.png", size=(40, 40))
    data = good.read_bytes()
    (tmp_path / "d" / "dog").mkdir()
    (tmp_path / "d" / "dog" / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png"):
        load_image_folder(tmp_path / "d")


def test_folder_file_removed_after_load(folder):
    ds = load_image_folder(folder, size=8)
    (folder / "cat" / "a.png").unlink()
    with pytest.raises(DataError, match=r"a\.png.*disappeared"):
        ds.inputs[0]


def test_folder_bad_size(folder):
    with pytest.raises(ConfigError, match="size"):
        load_image_folder(folder, size=0)


# ----------------------------------------------------------------------------- tables


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_text(tmp_path):
    p = _write(tmp_path, "reviews.csv", "review,stars\ngreat,5\nbad,1\n\"ok, fine\",3\nmeh,\n")
    ds = load_table(p, text="review", label="stars")
    assert ds.modality == "text" and ds.name == "reviews"
    assert ds.inputs == ["great", "bad", "ok, fine", "meh"]
    assert ds.classes == ["1", "3", "5"]
    assert ds.labels.tolist() == [2, 0, 1, -1]  # missing label -> unlabeled


def test_csv_numeric_default_features_and_label_autodetect(tmp_path):
    p = _write(tmp_path, "t.csv", "a,b,name,label\n1,2.5,x,dog\n3,4,y,cat\n5,6,z,dog\n")
    ds = load_table(p)
    assert ds.modality == "tabular"
    assert ds.meta["feature_columns"] == ["a", "b"]
    assert ds.inputs.dtype == np.float32 and ds.inputs.shape == (3, 2)
    np.testing.assert_allclose(ds.inputs[0], [1, 2.5])
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [1, 0, 1]
    assert load_table(p, label=False).labels is None


def test_numeric_labels_sorted_numerically(tmp_path):
    p = _write(tmp_path, "t.csv", "f,y\n1,10\n2,2\n3,10\n")
    ds = load_table(p, label="y")
    assert ds.classes == ["2", "10"] and ds.labels.tolist() == [1, 0, 1]


def test_tsv_and_feature_list(tmp_path):
    p = _write(tmp_path, "t.tsv", "a\tb\tc\tk\n1\t2\t3\t0\n4\t5\t6\t1\n")
    ds = load_table(p, features=["c", "a"], label="k")
    np.testing.assert_allclose(ds.inputs, [[3, 1], [6, 4]])
    ds2 = load_table(p, features="c, a", label="k")
    np.testing.assert_array_equal(ds.inputs, ds2.inputs)


def test_parquet(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame({"x1": [0.1, 0.2, 0.3], "x2": [1, 2, 3], "target": ["b", "a", None]}).to_parquet(p)
    ds = load_table(p)
    assert ds.modality == "tabular" and ds.inputs.shape == (3, 2)
    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [1, 0, -1]


def test_table_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.csv.*does not exist"):
        load_table(tmp_path / "nothere.csv")


def test_table_unparseable(tmp_path):
    p = _write(tmp_path, "broken.csv", "a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(DataError, match=r"cannot read .*broken\.csv.* as CSV"):
        load_table(p)


def test_table_not_utf8(tmp_path):
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00\x01garbage\x80\x81")
    with pytest.raises(DataError, match=r"bin\.csv.*not UTF-8"):
        load_table(p)


def test_table_garbage_parquet(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read .*bad\.parquet.* as PARQUET"):
        load_table(p)


def test_table_unsupported_suffix(tmp_path):
    p = _write(tmp_path, "t.xlsx", "whatever")
    with pytest.raises(DataError, match=r"t\.xlsx.*unsupported table format '\.xlsx'"):
        load_table(p)


def test_table_empty_file_and_header_only(tmp_path):
    with pytest.raises(DataError, match=r"empty\.csv.*is empty"):
        load_table(_write(tmp_path, "empty.csv", ""))
    with pytest.raises(DataError, match=r"head\.csv.*no data rows"):
        load_table(_write(tmp_path, "head.csv", "a,b,label\n"))


def test_table_label_column_absent(tmp_path):
    p = _write(tmp_path, "r.csv", "review,stars\ngood,5\n")
    msg = r"r\.csv.*label column 'star' not found\. Did you mean 'stars'\?.*'review', 'stars'"
    with pytest.raises(DataError, match=msg):
        load_table(p, text="review", label="star")


def test_table_text_column_absent(tmp_path):
    p = _write(tmp_path, "r.csv", "review,stars\ngood,5\n")
    with pytest.raises(DataError, match=r"r\.csv.*text column 'reviews' not found\. Did you mean 'review'"):
        load_table(p, text="reviews", label="stars")


def test_table_text_column_not_strings(tmp_path):
    p = _write(tmp_path, "r.csv", "review,stars,n\ngood,5,1\nbad,1,2\n")
    with pytest.raises(DataError, match=r"r\.csv.*text column 'n' must hold strings.*int"):
        load_table(p, text="n", label="stars")


def test_table_text_column_with_empty_values(tmp_path):
    p = _write(tmp_path, "r.csv", "review,stars\ngood,5\n,1\n")
    with pytest.raises(DataError, match=r"text column 'review' has 1 empty value.*data rows 2"):
        load_table(p, text="review", label="stars")


def test_table_non_numeric_features(tmp_path):
    p = _write(tmp_path, "t.csv", "a,color,label\n1,red,0\n2,blue,1\n")
    with pytest.raises(DataError, match=r"t\.csv.*feature column\(s\) 'color' .*not numeric"):
        load_table(p, features=["a", "color"])


def test_table_feature_column_absent(tmp_path):
    p = _write(tmp_path, "t.csv", "age,income,label\n1,2,0\n")
    with pytest.raises(DataError, match=r"feature column 'incme' not found\. Did you mean 'income'"):
        load_table(p, features=["age", "incme"])


def test_table_no_numeric_columns(tmp_path):
    p = _write(tmp_path, "t.csv", "review,label\ngood,1\n")
    with pytest.raises(DataError, match=r"t\.csv.*no numeric feature columns.*'review'.*text=COLUMN"):
        load_table(p)


def test_table_nan_in_features(tmp_path):
    p = _write(tmp_path, "t.csv", "a,b,label\n1,2,0\n,4,1\n5,,0\n7,,1\n")
    with pytest.raises(DataError, match=r"t\.csv.*feature column 'a' has 1 missing.*data rows 2.*also in 'b'"):
        load_table(p)
    with pytest.raises(DataError, match=r"feature column 'b' has 2 missing.*data rows 3, 4"):
        load_table(p, features=["b"])


def test_table_text_and_features_together(tmp_path):
    p = _write(tmp_path, "t.csv", "a,b\n1,x\n")
    with pytest.raises(ConfigError, match="either text= .* or features="):
        load_table(p, text="b", features=["a"])


def test_table_continuous_label(tmp_path):
    p = _write(tmp_path, "t.csv", "a,price\n1,2.5\n2,3\n")
    with pytest.raises(DataError, match=r"label column 'price' holds non-integer numbers"):
        load_table(p, label="price")


# ----------------------------------------------------------------------------- npz


def test_npz_uint8_images(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(6, 5, 5), dtype=np.uint8)
    p = tmp_path / "imgs.npz"
    np.savez(p, images=x, labels=np.array([0, 1, 2, 0, 1, -1]))
    ds = load_npz(p)
    assert ds.modality == "image" and ds.name == "imgs"
    assert ds.inputs.dtype == np.float32
    np.testing.assert_allclose(ds.inputs, x / 255.0, atol=1e-6)
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, -1] and ds.classes == ["0", "1", "2"]
    assert ds.meta["x_key"] == "images" and ds.meta["y_key"] == "labels"


def test_npz_float_color_images_and_tabular(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, X=np.full((3, 4, 4, 3), 0.5, np.float64), Y=np.array([1.0, 0.0, 1.0]))
    ds = load_npz(p)
    assert ds.modality == "image" and ds.inputs.shape == (3, 4, 4, 3)
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [1, 0, 1]
    q = tmp_path / "t.npz"
    np.savez(q, features=np.arange(12.0).reshape(4, 3) - 5, y=np.array(["b", "a", "b", "a"]),)
    ds = load_npz(q)
    assert ds.modality == "tabular" and ds.inputs.shape == (4, 3)
    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [1, 0, 1, 0]


def test_npz_custom_keys_unlabeled_and_class_names(tmp_path):
    p = tmp_path / "k.npz"
    np.savez(p, inp=np.zeros((2, 3)), lab=np.array([0, 1]), classes=np.array(["neg", "pos"]))
    ds = load_npz(p, x="inp", y="lab")
    assert ds.classes == ["neg", "pos"]
    assert load_npz(p, x="inp", y=None).labels is None


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"gone\.npz.*does not exist"):
        load_npz(tmp_path / "gone.npz")


def test_npz_not_an_archive(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"hello, I am text")
    with pytest.raises(DataError, match=r"junk\.npz.*not a valid \.npz"):
        load_npz(p)


def test_npz_is_a_pickle(tmp_path):
    p = tmp_path / "pick.npz"
    p.write_bytes(pickle.dumps({"x": [1, 2, 3]}))
    with pytest.raises(DataError, match=r"pick\.npz.*is a pickle.*allow_pickle=False"):
        load_npz(p)


def test_npz_object_array(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([np.zeros(2), np.zeros(3)], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"obj\.npz.*'x' holds Python objects.*allow_pickle=False"):
        load_npz(p)


def test_npz_single_array_npy(tmp_path):
    p = tmp_path / "single.npz"
    with open(p, "wb") as f:
        np.save(f, np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"single\.npz.*single array"):
        load_npz(p)


def test_npz_missing_keys(tmp_path):
    p = tmp_path / "keys.npz"
    np.savez(p, data=np.zeros((2, 3)), target=np.array([0, 1]))
    with pytest.raises(DataError, match=r"keys\.npz.*no input array 'x', 'X', 'images', 'features'.*'data', 'target'"):
        load_npz(p)
    with pytest.raises(DataError, match=r"keys\.npz.*no label array 'y', 'Y', 'labels'.*'data', 'target'.*y=None"):
        load_npz(p, x="data")
    with pytest.raises(DataError, match=r"no label array 'lbl'"):
        load_npz(p, x="data", y="lbl")


def test_npz_length_mismatch(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, x=np.zeros((3, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"m\.npz.*3 inputs but 2 labels"):
        load_npz(p)


def test_npz_non_integer_labels(tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, x=np.zeros((2, 2)), y=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match=r"f\.npz.*labels 'y' are not whole numbers"):
        load_npz(p)


def test_npz_nan_labels(tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, x=np.zeros((2, 2)), y=np.array([np.nan, 1.0]))
    with pytest.raises(DataError, match=r"f\.npz.*NaN/inf.*-1"):
        load_npz(p)


def test_npz_nan_inputs(tmp_path):
    p = tmp_path / "n.npz"
    x = np.zeros((3, 2))
    x[1, 0] = np.nan
    x[2, 1] = np.inf
    np.savez(p, x=x, y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match=r"n\.npz.*2 NaN/inf value\(s\) in 2 sample\(s\).*index 1"):
        load_npz(p)


def test_npz_float_images_out_of_range(tmp_path):
    p = tmp_path / "big.npz"
    np.savez(p, x=np.full((2, 4, 4), 200.0), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"big\.npz.*outside \[0, 1\].*x / 255"):
        load_npz(p)


def test_npz_channels_first(tmp_path):
    p = tmp_path / "cf.npz"
    np.savez(p, x=np.zeros((2, 3, 8, 8), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"cf\.npz.*channels-first.*transpose"):
        load_npz(p)


# ----------------------------------------------------------------------------- spec parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("digits", ("digits", {})),
        ("digits:", ("digits", {})),
        (" digits : rotate = 45 ", ("digits", {"rotate": 45})),
        (
            "digits:rotate=22..45,translate=0.1,seed=1,invert=true,subset=0/2",
            ("digits", {"rotate": "22..45", "translate": 0.1, "seed": 1, "invert": True, "subset": "0/2"}),
        ),
        ("digits:invert=False,noise=1e-2,name=none", ("digits", {"invert": False, "noise": 0.01, "name": None})),
        ("reviews.csv:text=review,label=stars", ("reviews.csv", {"text": "review", "label": "stars"})),
        ("t.csv:features=[age,income],label=y", ("t.csv", {"features": ["age", "income"], "label": "y"})),
        ("data/a.npz:x=images,y=labels", ("data/a.npz", {"x": "images", "y": "labels"})),
        ("x.csv:text=a=b", ("x.csv", {"text": "a=b"})),
    ],
)
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


def test_parse_spec_dict():
    assert parse_spec({"name": "digits", "rotate": 30}) == ("digits", {"rotate": 30})
    assert parse_spec({"path": "a.csv", "label": "y", "domain_name": "A"}) == ("a.csv", {"label": "y", "name": "A"})
    with pytest.raises(ConfigError, match="exactly one of 'name'.*or 'path'"):
        parse_spec({"rotate": 30})
    with pytest.raises(ConfigError, match="not both"):
        parse_spec({"name": "digits", "path": "x"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("digits:rotate", r"option 'rotate' has no value; write rotate=VALUE"),
        ("digits:seed=1,seed=2", r"option 'seed' is given twice"),
        ("digits:bad key=1", r"'bad key' is not a valid option name"),
        ("digits:features=[a,b", r"unbalanced brackets"),
        ("", r"spec is empty"),
    ],
)
def test_parse_spec_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec)


def test_parse_spec_path_with_colon(tmp_path):
    d = tmp_path / "odd:dir"
    d.mkdir()
    q = _write(d, "t:1.csv", "a,label\n1,0\n2,1\n")
    assert parse_spec(str(q)) == (str(q), {})
    assert parse_spec(f"{q}:label=a") == (str(q), {"label": "a"})
    ds = load_dataset(f"{q}:features=[a]")
    assert ds.modality == "tabular" and ds.inputs.shape == (2, 1)
    assert ds.spec == f"{q}:features=[a]"


# ----------------------------------------------------------------------------- load_dataset


def test_load_dataset_registered_and_overrides():
    ds = load_dataset("digits:size=8,subset=0/4,rotate=10")
    assert ds.spec == "digits:size=8,subset=0/4,rotate=10"
    assert ds.modality == "image" and ds.inputs.shape[1:] == (8, 8)
    ds2 = load_dataset("digits:size=8,subset=0/4", rotate=10)
    np.testing.assert_array_equal(ds.inputs, ds2.inputs)
    assert ds2.spec == "digits:size=8,subset=0/4,rotate=10"
    ds3 = load_dataset({"name": "digits", "size": 8, "subset": "1/4"})
    assert ds3.spec == "digits:size=8,subset=1/4"


def test_load_dataset_paths(tmp_path, folder):
    ds = load_dataset(f"{folder}:size=4")
    assert ds.modality == "image" and ds.inputs[0].shape == (4, 4, 3) and ds.spec == f"{folder}:size=4"
    csv = _write(tmp_path, "reviews.csv", "review,stars\ngood,5\nbad,1\n")
    ds = load_dataset(f"{csv}:text=review,label=stars,name=amazon")
    assert ds.modality == "text" and ds.name == "amazon" and ds.classes == ["1", "5"]
    npz = tmp_path / "a.npz"
    np.savez(npz, x=np.zeros((2, 3)), y=np.array([0, 1]))
    assert load_dataset(str(npz)).modality == "tabular"
    assert load_dataset(f"{npz}:y=none").labels is None


def test_load_dataset_unknown_name():
    msg = r"unknown dataset 'digitz'.*Did you mean 'digits'\?.*Registered datasets: .*digits"
    with pytest.raises(ConfigError, match=msg):
        load_dataset("digitz:rotate=3")


def test_load_dataset_empty_name_is_not_the_current_folder():
    with pytest.raises(ConfigError, match=r"unknown dataset ':size=4'"):
        load_dataset(":size=4")


def test_load_dataset_missing_path(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(ConfigError, match=rf"{re.escape(str(missing))}.*no such file or folder"):
        load_dataset(f"{missing}:label=y")
    with pytest.raises(ConfigError, match=r"'data/reviews\.csv': no such file"):
        load_dataset("data/reviews.csv")


def test_load_dataset_unsupported_file(tmp_path):
    p = _write(tmp_path, "notes.txt", "hi")
    with pytest.raises(ConfigError, match=r"notes\.txt.*unsupported file type '\.txt'"):
        load_dataset(str(p))


def test_load_dataset_unknown_options(tmp_path):
    csv = _write(tmp_path, "r.csv", "review,stars\ngood,5\n")
    with pytest.raises(ConfigError, match=r"table .*r\.csv.*unknown option 'lable'\. Did you mean 'label'"):
        load_dataset(f"{csv}:text=review,lable=stars")
    with pytest.raises(ConfigError, match=r"digits: unknown option 'rotation'.*Did you mean 'rotate'"):
        load_dataset("digits:rotation=4")


def test_load_dataset_data_error_passes_through(tmp_path):
    csv = _write(tmp_path, "r.csv", "review,stars\ngood,5\n")
    with pytest.raises(DataError, match=r"label column 'star' not found"):
        load_dataset(f"{csv}:text=review,label=star")


def test_list_datasets():
    kinds = list_datasets()
    assert "digits" in kinds and kinds["digits"]
    for k in ("<folder>", "<file>.csv", "<file>.tsv", "<file>.parquet", "<file>.npz"):
        assert k in kinds


def test_without_labels_hides_every_label_and_keeps_the_rest():
    import numpy as np

    from transferkit.data import DomainDataset

    ds = DomainDataset(np.zeros((4, 3), np.float32), np.array([0, 1, 1, 0]), "d", "tabular", classes=["a", "b"],
                       spec="x.npz")
    u = ds.without_labels()
    assert (u.labels == -1).all() and u.inputs is ds.inputs and u.fingerprint() == ds.fingerprint()
    assert (u.name, u.modality, u.classes, u.spec) == (ds.name, ds.modality, ds.classes, ds.spec)
    assert (ds.labels == [0, 1, 1, 0]).all()  # the original keeps its labels

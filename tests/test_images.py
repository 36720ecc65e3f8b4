"""Decoding, writing and naming photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unlearn_cli.config import ClassLayout
from unlearn_cli.errors import ImageError, NoImagesError, SetupError
from unlearn_cli.io.images import apply_noise, find_images, load_photo, write_png_atomic
from unlearn_cli.io.inputs import collect_inputs, plan_output_names

from .conftest import pattern_image

# Pillow's transpose for each EXIF orientation: what a viewer does to show the photo upright.
_UPRIGHT = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_photos_are_decoded_upright(tmp_path: Path, orientation: int) -> None:
    upright = pattern_image(orientation, (40, 24))
    stored = upright
    for transpose in _UPRIGHT.get(orientation, []):  # store the inverse, tag the orientation
        inverse = {
            Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
            Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
        }.get(transpose, transpose)
        stored = stored.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    stored.save(path, exif=exif)
    photo = load_photo(path)
    assert photo.size == (40, 24)
    assert np.array_equal(photo.rgb, np.asarray(upright))


def test_alpha_is_kept_apart_and_written_back(tmp_path: Path) -> None:
    image = pattern_image(1, (20, 10), mode="RGBA")
    alpha = np.arange(200, dtype=np.uint8).reshape(10, 20)
    image.putalpha(Image.fromarray(alpha))
    image.save(tmp_path / "a.png")
    photo = load_photo(tmp_path / "a.png")
    assert photo.rgb.shape == (10, 20, 3) and np.array_equal(photo.alpha, alpha)
    write_png_atomic(tmp_path / "out" / "a.png", photo.rgb, photo.alpha)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png"))[:, :, 3], alpha)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]  # no temporary left


def test_grayscale_and_palette_become_rgb(tmp_path: Path) -> None:
    pattern_image(2, mode="L").save(tmp_path / "g.png")
    pattern_image(3).convert("P").save(tmp_path / "p.gif")
    assert load_photo(tmp_path / "g.png").rgb.shape == (24, 24, 3)
    assert load_photo(tmp_path / "g.png").grayscale
    assert load_photo(tmp_path / "p.gif").rgb.shape == (24, 24, 3)
    assert not load_photo(tmp_path / "p.gif").grayscale


def test_black_and_white_photos_stay_black_and_white(tmp_path: Path) -> None:
    pattern_image(5, (30, 20), mode="L").save(tmp_path / "bw.png")
    photo = load_photo(tmp_path / "bw.png")
    noise = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0))
    protected = apply_noise(photo, noise, 8)
    assert (protected[..., 0] == protected[..., 1]).all() and (
        protected[..., 1] == protected[..., 2]
    ).all()
    assert np.abs(protected.astype(int) - photo.rgb.astype(int)).max() <= 8
    write_png_atomic(tmp_path / "out.png", protected, grayscale=True)
    assert Image.open(tmp_path / "out.png").mode == "L"


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    photo = load_photo(tmp_path / "deep.png")
    assert photo.rgb[0, :, 0].tolist() == [0, 100, 255] and photo.grayscale


def test_undecodable_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="broken.jpg: cannot decode image"):
        load_photo(bad)


def test_find_images_skips_hidden_and_non_images(tmp_path: Path) -> None:
    for name in ["b.jpg", "a.PNG", ".hidden.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".thumbs").mkdir()
    (tmp_path / ".thumbs" / "c.jpg").write_bytes(b"x")
    assert [p.name for p in find_images(tmp_path)] == ["a.PNG", "b.jpg"]


def test_output_name_clashes_never_overwrite() -> None:
    names = plan_output_names([Path("a.jpg"), Path("a.png"), Path("b.jpeg"), Path("x/a.jpg")])
    assert names == [Path("a.jpg.png"), Path("a.png"), Path("b.png"), Path("x/a.png")]
    assert len(set(names)) == len(names)


def _touch_images(root: Path, relatives: list[str]) -> None:
    for relative in relatives:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        pattern_image(0).save(root / relative)


def test_flat_folder_is_one_class_and_writes_beside_it(tmp_path: Path) -> None:
    _touch_images(tmp_path / "Ada", ["1.png", "2.png"])
    found = collect_inputs([str(tmp_path / "Ada")], None, ClassLayout.AUTO)
    assert found.class_names == ["Ada"]
    assert found.output_root == (tmp_path / "Ada-protected").resolve()
    assert [p.relative.as_posix() for p in found.photos] == ["1.png", "2.png"]


def test_subfolders_are_classes_and_deeper_folders_belong_to_the_first_level(
    tmp_path: Path,
) -> None:
    _touch_images(tmp_path / "people", ["ada/1.png", "ada/2019/2.png", "bob/3.png"])
    found = collect_inputs([str(tmp_path / "people")], None, ClassLayout.AUTO)
    assert {p.relative.as_posix(): p.class_name for p in found.photos} == {
        "ada/1.png": "ada",
        "ada/2019/2.png": "ada",
        "bob/3.png": "bob",
    }
    one = collect_inputs([str(tmp_path / "people")], None, ClassLayout.ONE)
    assert one.class_names == ["people"]


def test_output_folder_inside_the_input_is_not_read(tmp_path: Path) -> None:
    _touch_images(tmp_path / "me", ["1.png", "out/old.png"])
    found = collect_inputs([str(tmp_path / "me")], tmp_path / "me" / "out", ClassLayout.AUTO)
    assert [p.relative.as_posix() for p in found.photos] == ["1.png"]


def test_files_and_stdin_need_out_and_form_one_class(tmp_path: Path) -> None:
    _touch_images(tmp_path, ["a/1.png", "b/2.png"])
    with pytest.raises(SetupError, match="--out is required"):
        collect_inputs([str(tmp_path / "a" / "1.png")], None, ClassLayout.AUTO)
    found = collect_inputs(
        ["-"],
        tmp_path / "o",
        ClassLayout.AUTO,
        stdin_paths=[str(tmp_path / "a/1.png"), str(tmp_path / "b/2.png"), ""],
    )
    assert len(found.class_names) == 1 and len(found.photos) == 2


def test_input_errors_are_setup_errors(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="no such file"):
        collect_inputs([str(tmp_path / "missing")], tmp_path / "o", ClassLayout.AUTO)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoImagesError):
        collect_inputs([str(tmp_path / "empty")], None, ClassLayout.AUTO)
    with pytest.raises(SetupError, match="input folder itself"):
        collect_inputs([str(tmp_path / "empty")], tmp_path / "empty", ClassLayout.AUTO)


def test_an_output_that_would_overwrite_an_original_is_refused(tmp_path: Path) -> None:
    _touch_images(tmp_path, ["a.png"])
    with pytest.raises(SetupError, match="would overwrite an original"):
        collect_inputs([str(tmp_path / "a.png")], tmp_path, ClassLayout.AUTO)


def test_rgb_colour_profile_is_carried_to_the_output(tmp_path: Path) -> None:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pattern_image(4).save(tmp_path / "p.jpg", icc_profile=profile)
    photo = load_photo(tmp_path / "p.jpg")
    assert photo.icc_profile == profile
    write_png_atomic(tmp_path / "o.png", photo.rgb, photo.alpha, photo.icc_profile)
    assert Image.open(tmp_path / "o.png").info.get("icc_profile") == profile

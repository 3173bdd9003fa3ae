"""Storage errors (permissions, a full disk) say what happened and name the file."""

import pytest

from ood_nolabels.core.atomic import StorageError, storage_error


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (PermissionError(13, "Permission denied"), r"permission denied writing .*x\.pt"),
        (OSError(28, "No space left on device"), r"no space left on the device while writing"),
        (
            RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64"),
            r"no space",
        ),
    ],
)
def test_storage_errors_say_what_happened_and_where(tmp_path, error, message):
    found = storage_error(error, tmp_path / "x.pt")
    assert isinstance(found, StorageError)
    assert pytest.raises(StorageError, _raise, found).match(message)
    assert str(tmp_path / "x.pt") in str(found)


def _raise(error: BaseException) -> None:
    raise error


def test_a_non_storage_error_is_left_alone(tmp_path):
    assert storage_error(RuntimeError("shape mismatch"), tmp_path / "x.pt") is None

import pytest

pytestmark = pytest.mark.gui


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/gui" in str(item.fspath):
            item.add_marker(pytest.mark.gui)

import pytest

# The shared helpers' asserts report their operands, as the test modules' do.
pytest.register_assert_rewrite("tests.support")

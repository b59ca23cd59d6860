import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_bert  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random BERT (hidden 32) saved as a plain transformers directory."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert") / "model", hidden_size=32)


@pytest.fixture(scope="session")
def tiny_bert_dir_48(tmp_path_factory):
    """A second tiny BERT with another hidden size (48), e.g. a student whose size differs from the teacher's."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert48") / "model", hidden_size=48, seed=1)

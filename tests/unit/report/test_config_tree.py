"""The printed config tree."""

from rich.console import Console

from ood_nolabels.report.config_tree import config_tree


def test_print_config_shows_the_run_s_groups_first(compose_cfg):
    console = Console(record=True, width=100)
    console.print(config_tree(compose_cfg("+experiment=digits")))
    text = console.export_text()
    assert (
        text.index("method") < text.index("dataset") < text.index("stage1") < text.index("trainer")
    )
    assert "SmallCNNBackbone" in text and "EfficientNetLiteBackbone" in text
    assert "variant: 0" in text

from typing import Any

def decode(
    pred: Any,
    n: int,
    nc: int,
    conf: float,
    bound: float,
    reach: float,
    max_nms: int,
    max_det: int,
    agnostic: bool,
    max_wh: float,
    out: Any,
    /,
) -> int: ...

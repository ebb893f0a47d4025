"""The example's tools: what the scripts use to set the example up, beside the served library.

The demo model factory (``tiny_yolos``, ``demo_assets``), the generated training data
(``synthetic_data``), the proto dump (``proto_dump``; its conflict demo module stays in the library, where caikit looks for modules) and the evaluation of a
detector (``evaluation``). They import ``caikit_computer_vision``; the library never imports them.
"""

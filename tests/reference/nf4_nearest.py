"""Re-codes a bitsandbytes NF4 weight's double-quantized block scales with the nearest code.

bitsandbytes' native CPU 8-bit blockwise quantizer (which codes the block scales) splits two
neighbouring code values not at their midpoint but 0.498 to 0.526 of the way between them
(measured by sweeping values between codes), so about 1 block scale in 400 takes the farther
neighbour. peftc takes the nearer (`runtime/src/weights/nf4.rs`; `runtime/tests/quant.rs`
compares peftc's codes with bitsandbytes' own), as bitsandbytes' default pure-torch
`quantize_blockwise` does: torch.bucketize over the midpoints, whole groups times the inverse of
their absmax, a short last group divided by it. With `recode_nearest` the references
(make_golden.py, make_loftq.py) are the NF4 format itself, dequantized and multiplied by
bitsandbytes.
"""

import torch


def recode_nearest(w, st):
    """Sets `st` (the QuantState of `quantize_4bit(w, 64, "nf4", compress_statistics=True)`) to
    the nearest-code double quantization of `w`'s block absmaxes."""
    absmax = w.reshape(-1, st.blocksize).abs().max(1)[0]
    offset = absmax.mean()
    c = absmax - offset
    code = st.state2.code.float()
    mids = (code[1:] + code[:-1]) / 2
    q = torch.empty(c.numel(), dtype=torch.uint8)
    a2s = []
    for g in range(0, c.numel(), st.state2.blocksize):
        grp = c[g:g + st.state2.blocksize]
        a2 = grp.abs().max()
        x = grp * (1.0 / a2.clamp(min=1e-38)) if grp.numel() == st.state2.blocksize \
            else grp / a2.clamp(min=1e-38)
        q[g:g + grp.numel()] = torch.bucketize(torch.clamp(x, -1, 1), mids).to(torch.uint8)
        a2s.append(a2)
    st.absmax, st.state2.absmax, st.offset = q, torch.stack(a2s).float(), offset

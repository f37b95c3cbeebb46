"""Request bodies read with a size limit: refused (413) as soon as the declared length or
the bytes streamed so far pass it, so an oversized body is never held whole in memory."""

from __future__ import annotations

from fastapi import HTTPException, Request

__all__ = ["limited_body"]


async def limited_body(request: Request, limit: int, too_large: str) -> bytes:
    """The body of `request`, or HTTPException 413 with `too_large` once it passes `limit`
    bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, too_large)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, too_large)
        parts.append(chunk)
    return b"".join(parts)

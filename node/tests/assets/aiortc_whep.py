"""An independent WHEP viewer: aiortc (PyPI) pulls from a treecast node and decodes.

Usage: aiortc_whep.py WHEP_URL FRAMES TIMEOUT_S
Prints "decoded N frames WxH" and exits 0 once FRAMES video frames are decoded; exits
non-zero on a WHEP error or when the frames do not arrive in time.
"""
import asyncio
import sys

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError


async def main(url: str, frames: int, timeout: float) -> int:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    done = asyncio.get_running_loop().create_future()
    count = 0

    @pc.on("track")
    def on_track(track):
        if track.kind != "video":
            return

        async def pull():
            nonlocal count
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return  # the connection closed
                count += 1
                if count >= frames and not done.done():
                    done.set_result(frame)

        asyncio.ensure_future(pull())

    # aiortc gathers every candidate before setLocalDescription returns (no trickle).
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.post(
                url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
            ) as resp:
                if resp.status == 503:
                    await asyncio.sleep(int(resp.headers.get("Retry-After", "1")))
                    continue
                if resp.status != 201:
                    print(f"WHEP answered {resp.status}: {await resp.text()}")
                    return 2
                answer = await resp.text()
                break
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    try:
        frame = await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        print(f"only {count} frames decoded in {timeout} s")
        return 1
    print(f"decoded {count} frames {frame.width}x{frame.height}", flush=True)
    await pc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))

"""An independent WHIP publisher: aiortc (PyPI) publishes a looped file to a treecast root.

Usage: aiortc_whip.py WHIP_URL TOKEN VIDEO_FILE SECONDS
Prints "created" with the status and the headers a WHIP client relies on, "ufrag" with
its ICE username fragment, then "publishing" once the answer is applied, publishes for SECONDS, then DELETEs the
session and exits 0; exits non-zero when the server refuses the offer.
"""
import asyncio
import sys
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


async def main(url: str, token: str, video: str, seconds: float) -> int:
    player = MediaPlayer(video, loop=True)
    pc = RTCPeerConnection()
    pc.addTrack(player.video)
    for transceiver in pc.getTransceivers():
        transceiver.direction = "sendonly"
    await pc.setLocalDescription(await pc.createOffer())
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url,
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", **auth},
        ) as resp:
            if resp.status != 201:
                print(f"WHIP answered {resp.status}: {await resp.text()}", flush=True)
                return 2
            answer = await resp.text()
            session = urljoin(url, resp.headers["Location"])
            h = resp.headers
            print(
                f"created {resp.status} content-type={h.get('Content-Type')} "
                f"etag={h.get('ETag')} accept-patch={h.get('Accept-Patch')}",
                flush=True,
            )
        ufrag = next(
            line.split(":", 1)[1].strip()
            for line in pc.localDescription.sdp.splitlines()
            if line.startswith("a=ice-ufrag:")
        )
        print(f"ufrag {ufrag}", flush=True)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        print(f"publishing {session}", flush=True)
        await asyncio.sleep(seconds)
        async with http.delete(session, headers=auth) as resp:
            print(f"DELETE {resp.status}", flush=True)
    await pc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))))

#!/usr/bin/env bash
# Regenerates the demo's sample images and sounds in demo/media/ with ffmpeg (the .txt files
# there are written by hand). Deterministic: fixed seeds, -bitexact (no encoder version tags).
#   images: 224x224, three distinct simple scenes (sunset over the sea, a forest, a night sky)
#   sounds: 16 kHz mono 16-bit WAV, 0.25 s each (about 8 KB): a pure tone, a chord, white noise, a
#   sweep. All tones stay under 400 Hz: the demo's multimodal fixture resamples audio to 800 Hz,
#   and anything above its 400 Hz Nyquist limit would reach the model as silence.
set -euo pipefail
cd "$(dirname "$0")/media"

ff() { ffmpeg -nostdin -v error -y "$@"; }
image() { # name, geq expressions for r, g, b (X, Y: pixel position)
  ff -f lavfi -i "color=c=black:s=224x224:d=1,format=rgb24,geq=r='$2':g='$3':b='$4'" -frames:v 1 -bitexact "$1"
}
sound() { # name, lavfi source
  ff -f lavfi -i "$2" -t 0.25 -ac 1 -ar 16000 -c:a pcm_s16le -map_metadata -1 -fflags +bitexact -flags:a +bitexact "$1"
}

# A sun over the sea: an orange-to-purple sky, a yellow disc, a dark blue sea with ripples.
SUN='lt(hypot(X-112,Y-118),28)'
image sunset.jpg \
  "if(lt(Y,140), if($SUN, 255, 250-0.7*Y), 20+10*sin(Y*0.9))" \
  "if(lt(Y,140), if($SUN, 215, 150-0.8*Y), 40+12*sin(Y*0.9+X*0.05))" \
  "if(lt(Y,140), if($SUN, 90, 60+0.6*Y), 90+20*sin(Y*0.9+X*0.05))"

# A forest: a pale sky, green ground, dark green triangular trees with brown trunks.
TREE='lt(abs(mod(X,56)-28), (Y-40)*0.3)*between(Y,40,150)'
TRUNK='lt(abs(mod(X,56)-28),5)*between(Y,150,175)'
image forest.png \
  "if($TREE, 20, if($TRUNK, 100, if(lt(Y,150), 190, 60)))" \
  "if($TREE, 90, if($TRUNK, 60, if(lt(Y,150), 225, 150)))" \
  "if($TREE, 30, if($TRUNK, 20, if(lt(Y,150), 245, 50)))"

# A night sky: deep blue, a pale moon, scattered white stars.
MOON='lt(hypot(X-160,Y-60),22)'
STAR='gt(random(1),0.992)'
image night.jpg \
  "if($MOON, 235, if($STAR, 255, 10+Y*0.05))" \
  "if($MOON, 235, if($STAR, 255, 15+Y*0.08))" \
  "if($MOON, 210, if($STAR, 255, 50+Y*0.15))"

sound tone-a110.wav "aevalsrc=0.5*sin(2*PI*110*t):s=16000"
sound chord-c-major.wav "aevalsrc=0.2*sin(2*PI*261.63*t)+0.2*sin(2*PI*329.63*t)+0.2*sin(2*PI*392.00*t):s=16000"
sound noise-white.wav "anoisesrc=c=white:a=0.3:r=16000:seed=42"
# A linear sweep from 50 Hz to 350 Hz over the 0.25 s.
sound sweep-50-350.wav "aevalsrc=0.5*sin(2*PI*(50*t+(350-50)*t*t/(2*0.25))):s=16000"

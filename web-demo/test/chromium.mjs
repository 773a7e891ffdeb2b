// Headless Chromium as every browser test starts it: the system's Chromium (STRAIT_CHROMIUM, or
// /usr/bin/chromium) driven by playwright-core, which downloads no browser; a fake camera and
// microphone that need no permission prompt; WebRTC allowed on loopback, where the gateway's
// bridge and TURN server listen in the tests; and none of Chromium's background traffic, which
// this machine's closed network would refuse. `node --test` loads this file too: it has no tests.

const BASE_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--no-first-run',
  '--disable-sync',
  '--disable-background-networking',
  '--disable-component-update',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  '--allow-loopback-in-peer-connection',
];

// Starts Chromium with the common flags and `extraArgs`; rejects with words when
// playwright-core is not installed.
export async function launchChromium(extraArgs = []) {
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch {
    throw new Error('playwright-core is not installed: run `npm ci` in web-demo/ (./scripts/test does)');
  }
  const executablePath = process.env.STRAIT_CHROMIUM ?? '/usr/bin/chromium';
  const browser = await chromium.launch({ executablePath, headless: true, args: [...BASE_ARGS, ...extraArgs] });
  return { browser, executablePath };
}

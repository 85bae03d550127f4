// index.d.ts type-checks the documented usage (test/types-usage.ts) under `tsc --strict`.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

test('the TypeScript declarations type the documented usage', () => {
  const args = [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--skipLibCheck', join(here, 'types-usage.ts')];
  let output = '';
  try {
    output = execFileSync(process.execPath, args, { encoding: 'utf8', timeout: 120_000 });
  } catch (error) {
    assert.fail(`tsc failed:\n${error.stdout}${error.stderr}`);
  }
  assert.equal(output, '');
});

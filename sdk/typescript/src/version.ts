/** This SDK's name and version, as a worker reports them with its fetches (`test/worker.test.ts` keeps
 * the version equal to `package.json`'s). */
export const SDK_NAME = '@errand/sdk';
export const SDK_VERSION = '0.1.0';

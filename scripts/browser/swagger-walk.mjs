// The README's first walk, in Swagger UI as a newcomer clicks it, in headless Chromium: Authorize
// with the admin key, then for each step "Try it out" and Execute with the body Swagger UI fills
// in from the spec's examples. A step that names what an earlier one created gets those ids in its
// path parameters (and, for the order, in its body), as the walk tells its reader; nothing else
// is typed. Every step must answer 2xx. A screenshot of each answer is kept.
//
// Usage: node swagger-walk.mjs API_URL ADMIN_KEY OUT_DIR
//   CHROMIUM        the browser (default /usr/bin/chromium, Debian's)
//   BROWSER_MODULES where npm installed playwright-core (default target/browser)
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";

const modules = process.env.BROWSER_MODULES ?? new URL("../../target/browser", import.meta.url).pathname;
const { chromium } = createRequire(`${modules}/`)("playwright-core");

const [api, key, out] = process.argv.slice(2);
if (!api || !key || !out) {
  console.error("usage: node swagger-walk.mjs API_URL ADMIN_KEY OUT_DIR");
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
const errors = [];
page.on("pageerror", (error) => errors.push(error.message));

try {
  await page.goto(`${api}/docs`);
  await page.locator(".opblock").first().waitFor({ timeout: 30_000 });

  await page.locator("button.authorize").first().click();
  await page.locator(".modal-ux input").first().fill(key);
  await page.locator(".modal-ux button.authorize").first().click();
  await page.locator(".modal-ux button.btn-done").first().click();

  let step = 0;
  // Tries operation `method path` out: fills `params` in, lets `editBody` change the pre-filled
  // body, executes, and returns the answer's status and body.
  async function tryOut(method, path, params = {}, editBody = null) {
    step += 1;
    const block = page.locator(`.opblock.opblock-${method}`, {
      has: page.locator(`.opblock-summary-path[data-path="${path}"]`),
    });
    await block.locator(".opblock-summary").first().click();
    await block.locator("button.try-out__btn").click();
    for (const [name, value] of Object.entries(params)) {
      await block.locator(`tr[data-param-name="${name}"] input`).fill(value);
    }
    const textarea = block.locator("textarea.body-param__text");
    let sent = null;
    if ((await textarea.count()) > 0) {
      sent = await textarea.inputValue();
      if (editBody) {
        sent = JSON.stringify(editBody(JSON.parse(sent)), null, 2);
        await textarea.fill(sent);
      }
    }
    await block.locator("button.execute").click();
    const status = block.locator(".live-responses-table .response .response-col_status").first();
    await status.waitFor({ timeout: 30_000 });
    const code = Number((await status.innerText()).trim());
    const text = await block.locator(".live-responses-table .response-col_description pre").first().innerText();
    await block.screenshot({ path: `${out}/${String(step).padStart(2, "0")}-${method}${path.replaceAll(/[/{}]/g, "_")}.png` });
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    const line = `${method.toUpperCase()} ${path}: ${code}`;
    if (code < 200 || code >= 300) {
      throw new Error(`${line}, sent ${sent}, answered ${text}`);
    }
    console.log(`${line} (body as Swagger UI filled it in${editBody ? ", with the ids of the earlier steps" : ""})`);
    // Collapse it again, so that the next block is where the page expects it.
    await block.locator(".opblock-summary").first().click();
    return body;
  }

  const store = await tryOut("post", "/stores");
  // Listed at once, even when a read replica serves the list: a key reads its own writes.
  const stores = await tryOut("get", "/stores", { limit: "500" });
  if (!stores.items.some((listed) => listed.id === store.id)) throw new Error("the new store is not in the list");
  const product = await tryOut("post", "/products");
  const ids = { store_id: store.id, product_id: product.id };
  await tryOut("put", "/warehouse/stock/{product_id}", { product_id: product.id });
  await tryOut("put", "/stores/{store_id}/inventory/{product_id}", ids);
  const order = await tryOut("post", "/orders", {}, (body) => ({
    ...body,
    store_id: store.id,
    items: body.items.map((item) => ({ ...item, product_id: product.id })),
  }));
  if (order.status !== "reserved") throw new Error(`the order is ${order.status}, not reserved`);
  await tryOut("get", "/stores/{store_id}/inventory/{product_id}", ids);
  await tryOut("post", "/api-keys");
  if (errors.length > 0) throw new Error(`the page raised errors: ${errors.join("; ")}`);
  console.log(`every step of the walk succeeded in Swagger UI; screenshots in ${out}`);
} catch (error) {
  await page.screenshot({ path: `${out}/failure.png`, fullPage: true }).catch(() => {});
  console.error(`the walk in Swagger UI failed: ${error.message} (screenshot: ${out}/failure.png)`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

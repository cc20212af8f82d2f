# cake CLI image: docker build -t cake . && docker run --rm -v cake:/root/.cache/cake cake pull hf://org/name
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY cli ./cli
COPY proxy ./proxy
COPY bench ./bench
COPY test ./test
COPY bin ./bin
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
COPY package.json ./
ENTRYPOINT ["node", "/app/bin/cake"]

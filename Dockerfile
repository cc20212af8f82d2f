# cake: the CLI, and by default the pull-through proxy.
#   docker build -t cake .
#   docker run -d -p 5000:5000 -v cake-store:/data cake                 # proxy on :5000, store in the volume
#   docker run --rm -v cake-store:/data cake pull hf://org/name          # any other cake command
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src ./src
COPY cli ./cli
COPY proxy ./proxy
COPY bench ./bench
COPY test ./test
COPY bin ./bin
RUN npm run build && npm prune --omit=dev

FROM node:20-slim
ENV NODE_ENV=production CAKE_HOME=/data CAKE_PROXY_HOST=0.0.0.0 CAKE_PROXY_PORT=5000
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
COPY package.json ./
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.CAKE_PROXY_PORT||5000)+'/v2/').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "/app/bin/cake"]
CMD ["proxy"]
